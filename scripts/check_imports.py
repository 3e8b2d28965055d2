# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Check the package's import graph: no cycles, and dependencies that run one way.

    python scripts/check_imports.py

Reads the source (nothing is imported). Layers, lowest first: the runtime
(``mlx_specstream`` minus the three below), ``mlx_specstream.convert``,
``mlx_specstream.train``; ``mlx_specstream.benchmarks`` may use all of them. A module
may import its own layer and the ones below it. The runtime never imports torch.
Function-local imports of the package's own modules count as edges too, so a
cycle cannot hide inside a function.

Inside the runtime, floors, lowest first: the shared base (``format``, ``errors``,
``blas``, ``sample_utils``, ``_version``: they import nothing of the package), ``models/``, ``loading/`` and ``decoding/`` (one floor:
loading fills what decoding reads), the API and commands at the top level, and
``serving/`` with the ``server`` command. A runtime module imports its own floor
and those below.

No module uses another package's private names: ``from m import _x`` and ``m._x``
(``m`` an imported module) are allowed only where ``m`` is in the importer's own
package (``mlx_specstream.models``, ``mlx_specstream.decoding``, ...).

Exits 1 and prints each problem otherwise.
"""

import ast
import sys
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
# Folder -> package name it is installed as (pyproject.toml's package-dir).
FOLDERS = {
    "mlx_specstream": "mlx_specstream",
    "convert": "mlx_specstream.convert",
    "train": "mlx_specstream.train",
    "benchmarks": "mlx_specstream.benchmarks",
}
LAYERS = ["runtime", "convert", "train", "benchmarks"]
BASE = ("format", "errors", "blas", "sample_utils", "_version")
FLOORS = {"base": 0, "models": 1, "loading": 2, "decoding": 2, "api": 3, "serving": 4}
TORCH = ("torch", "peft", "transformers")  # transformers pulls torch in at import


def modules() -> Dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = list(f.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = f
    return out


def layer(module: str) -> str:
    for name in ("convert", "train", "benchmarks"):
        if module == f"mlx_specstream.{name}" or module.startswith(
            f"mlx_specstream.{name}."
        ):
            return name
    return "runtime"


def floor(module: str) -> str:
    """The runtime floor of a runtime module."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"  # the package itself (__init__.py): the public API
    if parts[1] in BASE:
        return "base"
    if parts[1] == "server":
        return "serving"
    if parts[1] in ("models", "loading", "decoding", "serving"):
        return parts[1]
    return "api"


def package_of(module: str, file: Path) -> str:
    return module if file.name == "__init__.py" else module.rpartition(".")[0]


def private_uses(module: str, file: Path, known: Set[str]) -> List[tuple]:
    """(line, "m._x") for each private name of another package's module used."""
    tree = ast.parse(file.read_text(), str(file))
    package = package_of(module, file)
    aliases: Dict[str, str] = {}  # local name -> imported module
    found = []

    def foreign(target: str) -> bool:
        return target in known and package_of(target, Path(f"{target}.py")) != package

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in known:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:
                    aliases[a.asname or a.name] = sub
                elif _private(a.name) and foreign(base):
                    found.append((node.lineno, f"{base}.{a.name}"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _private(node.attr)
            and foreign(aliases[node.value.id])
        ):
            found.append((node.lineno, f"{aliases[node.value.id]}.{node.attr}"))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def imports(module: str, file: Path, known: Set[str]) -> List[tuple]:
    """(imported module, line, top level?) for every import in ``file``."""
    tree = ast.parse(file.read_text(), str(file))
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{a.name}" for a in node.names]
            names = [n for n in names if n in known] or [base]
        else:
            continue
        for n in names:
            found.append((n, node.lineno, id(node) in top))
    return found


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> List[str]:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state:
                cycle = visit(n)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return []


def problems() -> List[str]:
    mods = modules()
    known = set(mods)
    graph: Dict[str, Set[str]] = {m: set() for m in mods}
    out = []
    for m, f in mods.items():
        for target, line, _ in imports(m, f, known):
            where = f"{f.relative_to(ROOT)}:{line}"
            if layer(m) == "runtime" and target.split(".")[0] in TORCH:
                out.append(f"{where}: the runtime imports {target}")
            if target not in known:
                continue
            if LAYERS.index(layer(target)) > LAYERS.index(layer(m)):
                out.append(f"{where}: {layer(m)} module {m} imports {target}")
            elif layer(m) == layer(target) == "runtime" and target != "mlx_specstream":
                a, b = floor(m), floor(target)
                if FLOORS[b] > FLOORS[a]:
                    out.append(f"{where}: {a} module {m} imports {b} module {target}")
            if target != m:
                graph[m].add(target)
        for line, name in private_uses(m, f, known):
            where = f"{f.relative_to(ROOT)}:{line}"
            out.append(f"{where}: {m} uses {name}, private to another package")
    cycle = find_cycle(graph)
    if cycle:
        out.append("import cycle: " + " -> ".join(cycle))
    return out


def main() -> None:
    found = problems()
    for p in found:
        print(p)
    if found:
        sys.exit(1)
    print(f"ok: {len(modules())} modules, no cycles, dependencies run one way")


if __name__ == "__main__":
    main()
