"""The package's exported names: each resolves to what its module defines, loaded on first use."""
import os
import subprocess
import sys
from pathlib import Path

import bagoftricks.tricks as tricks


def test_every_exported_name_resolves_to_its_module():
    for name in tricks.__all__:
        assert getattr(tricks, name) is not None, name
    assert tricks.cutmix_batch.__module__ == "bagoftricks.tricks.cutmix"


def test_no_exported_name_is_also_a_module_name():
    """Importing a submodule binds it on the package under its own name: an exported function of the
    same name would then depend on import order. None is named like a module, and importing every
    submodule first changes no exported name."""
    src = Path(tricks.__file__).resolve().parent
    modules = {p.stem for p in src.glob("*.py") if p.stem != "__init__"}
    assert not modules & set(tricks.__all__), modules & set(tricks.__all__)
    code = (
        "import importlib, sys, types; import bagoftricks.tricks as t\n"
        "assert 'torch' not in sys.modules\n"
        f"for m in {sorted(modules)!r}: importlib.import_module('bagoftricks.tricks.' + m)\n"
        "for name in t.__all__:\n"
        "    value = getattr(t, name)\n"
        "    assert not isinstance(value, types.ModuleType), name\n"
    )
    root = str(src.parents[1])  # this checkout, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
