"""The house reads top to bottom: no import circle, no import that runs back up, small functions, one loop.

Imports are read from the source (function-level ones included) with `ast`; each module of
src/bagoftricks gets the layer of the room it is in, and a module may import only its own layer or
the ones below.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bagoftricks"

# the rooms, bottom up: a module imports only from its own layer or lower ones
LAYERS = [
    {"errors", "files", "seeds", "lazy", "console", "clock"},
    {"checkpoint"},
    {"data", "models", "tricks"},
    {"recipe"},
    {"engine"},
    {"transfer", "deploy", "bench", "onednn", "cli"},  # cli.py imports the engine and below; commands load by name
    {"ablate"},
    {"report"},
    {"api", "__init__", "__main__"},
]
LAYER = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
# the torch-free catalogues the recipe validates against sit below it, in their packages' rooms
CATALOGS = {"data.catalog", "models.catalog", "tricks.catalog", "tricks.schedule"}


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__") if name != "__init__" else "__init__"] = p
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the package that `name` imports anywhere in its file."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".") if pkg else []
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            if node.level:
                targets = [f"bagoftricks.{t}" if t else "bagoftricks" for t in targets]
        else:
            continue
        for t in targets:
            if t == "bagoftricks":
                continue
            if t.startswith("bagoftricks."):
                t = t[len("bagoftricks."):]
                if t in known:
                    found.add(t)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def room(module: str) -> str:
    return module.split(".")[0]


def test_no_module_imports_upward():
    bad = []
    for mod, deps in graph().items():
        for dep in deps:
            if dep in CATALOGS or room(dep) == room(mod):
                continue
            if LAYER[room(dep)] > LAYER[room(mod)]:
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports that run back up: " + ", ".join(sorted(bad))


def test_no_import_circle():
    g = graph()
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_functions_are_short_and_the_loop_is_one_file_of_at_most_400_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{name}.{node.name} ({n} lines)")
    assert not long, "functions over 60 lines: " + ", ".join(long)
    assert len((SRC / "engine" / "loop.py").read_text().splitlines()) <= 400


@pytest.mark.parametrize("package", ["", "data", "models", "tricks", "engine", "ablate", "report"])
def test_no_exported_name_of_a_package_is_also_a_module_name(package):
    """A submodule import binds the module on its package under its name: an exported name equal to a
    submodule's would then mean the module or the function depending on import order."""
    folder = SRC / package if package else SRC
    text = (folder / "__init__.py").read_text()
    exported = set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)":\s*"', text))
    submodules = {p.stem for p in folder.glob("*.py")}
    submodules |= {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}
    assert not exported & submodules, exported & submodules


def test_the_cli_docstring_names_modules_that_exist():
    import bagoftricks.cli as cli
    for module, func in re.findall(r'"(bagoftricks[\w.]*):(\w+)"', cli.__doc__):
        path = SRC.joinpath(*module.split(".")[1:]).with_suffix(".py")
        assert path.is_file(), module
        assert f"def {func}(" in path.read_text(), f"{module}:{func}"
