"""The package's exported names: each resolves to what its module defines, loaded on first use."""
import os
import subprocess
import sys
from pathlib import Path

import bagoftricks.tricks as tricks


def test_every_exported_name_resolves():
    for name in tricks.__all__:
        assert getattr(tricks, name) is not None, name
    assert tricks.cutmix.__module__ == "bagoftricks.tricks.cutmix"


def test_a_function_named_like_its_module_stays_the_function():
    """Importing a submodule binds it on the package under its name; for cutmix, cutout,
    param_groups and randaugment that name is the function's, whichever is loaded first."""
    code = (
        "import importlib, sys, types; import bagoftricks.tricks as t\n"
        "assert 'torch' not in sys.modules\n"
        "for name in ('cutmix', 'cutout', 'param_groups', 'randaugment'):\n"
        "    module = importlib.import_module('bagoftricks.tricks.' + name)\n"
        "    assert isinstance(module, types.ModuleType)\n"
        "    assert getattr(t, name) is getattr(module, name), name\n"
        "from bagoftricks.tricks import cutmix\n"
        "assert callable(cutmix) and not isinstance(cutmix, types.ModuleType)\n"
    )
    src = str(Path(tricks.__file__).resolve().parents[2])  # this checkout, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
