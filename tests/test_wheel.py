"""The wheel carries the recipes: built (`pip wheel`), installed into a folder of its own and used from an
empty working directory by a Python that cannot see the checkout, a recipe loads by name and
`python -m bagoftricks recipes` lists them. Marked slow (it runs pip: ~3 s on 2 idle cores, a minute at
most on a loaded machine); part of `make test`. The build runs in a copy of the tree, so no build/ or
*.egg-info is left in the checkout and the editable install in .venv is not touched."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_NO_CACHE_DIR": "1"}

INSTALLED = """if True:
    import sys
    from pathlib import Path
    src, site = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    assert all(Path(p or '.').resolve() != src for p in sys.path), sys.path
    import bagoftricks
    from bagoftricks import recipe
    assert Path(bagoftricks.__file__).resolve().is_relative_to(site), bagoftricks.__file__
    assert recipe.resolve_recipe_path('fmnist/fast-3min').resolve().is_relative_to(site)
    load = getattr(bagoftricks, 'load_recipe', recipe.load)  # the package's face, where it has one
    for r in (load('fmnist/fast-3min'), recipe.load('fmnist/fast-3min.yaml', ['train.epochs=7'])):
        assert r.model.arch == 'airbench' and r.data.progressive_sizes == (20, 24), r
    assert r.train.epochs == 7
    from bagoftricks.ablate.spec import load_spec  # a shipped spec finds its base beside it
    spec = load_spec(recipe.shipped_folder() / 'ablations' / 'fmnist-table4.yaml')
    assert spec.base_dict['model']['arch'] == 'resnet20'
    print(bagoftricks.__file__)
"""


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:4]}... exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_wheel_ships_the_recipes_and_they_load_by_name_when_installed(tmp_path):
    # the build writes build/ and *.egg-info beside pyproject.toml: a copy of the tree takes them
    tree = tmp_path / "tree"
    tree.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, tree / f)
    shutil.copytree(SRC, tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    env = {**os.environ, **PIP_ENV}
    env.pop("PYTHONPATH", None)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", str(dist)], tree, env)
    (wheel,) = dist.glob("bagoftricks-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.relative_to(REPO / "recipes").as_posix() for p in (REPO / "recipes").rglob("*.yaml"))
    assert "bagoftricks/recipes/fmnist/fast-3min.yaml" in names
    missing = [f for f in [*shipped, "ablations/README.md"] if f"bagoftricks/recipes/{f}" not in names]
    assert len(shipped) >= 30 and not missing, f"the wheel lacks {missing}"

    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
          str(wheel)], tmp_path, env)

    # -S: no site-packages processing, so the editable install's .pth (the checkout's src) is not read;
    # the venv's own packages (torch, yaml) come in after the installed wheel through PYTHONPATH
    libs = dict.fromkeys([str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    run_env = {**env, "PYTHONPATH": os.pathsep.join(libs)}
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _run([sys.executable, "-S", "-c", INSTALLED, str(SRC), str(site)], empty, run_env)
    assert Path(out.strip()).resolve().is_relative_to(site.resolve()), out

    listing = _run([sys.executable, "-S", "-m", "bagoftricks", "recipes"], empty, run_env)
    rows = [line.split()[0] for line in listing.splitlines() if line and not line.startswith("`")]
    expected = sorted(n.removesuffix(".yaml") for n in shipped if not n.startswith("ablations/"))
    assert rows == expected and "fmnist/fast-3min" in rows, listing
    assert str(site.resolve()) in listing or str(site) in listing  # the files it names are the installed ones
    assert not any(empty.iterdir())
