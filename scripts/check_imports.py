# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Check the package's import graph: no cycles, and dependencies that run one way.

    python scripts/check_imports.py

Reads the source (nothing is imported). Layers, lowest first: the runtime
(``mlx_specstream`` minus the three below), ``mlx_specstream.convert``,
``mlx_specstream.train``; ``mlx_specstream.benchmarks`` may use all of them. A module
may import its own layer and the ones below it. The runtime never imports torch.
Function-local imports of the package's own modules count as edges too, so a
cycle cannot hide inside a function. Exits 1 and prints each problem otherwise.
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
            if target != m:
                graph[m].add(target)
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
