"""The house rules of the code, checked on every run: one layer per folder with imports going one way (core,
machinery, read side, steps, front ends: docs/architecture.md), no import circle, even through imports inside
functions, no private name taken from another module, and no module over 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medloom"
LAYERS = {  # top-level module or package of medloom -> its layer (lower imports nothing higher)
    **dict.fromkeys(
        (
            "errors",
            "layout",
            "version",
            "records",
            "imaging",
            "outputs",
            "catalog",
            "locks",
            "vocab",
            "net",
            "arrowpool",
            "nopandas",
        ),
        0,
    ),
    **dict.fromkeys(("engine", "sources", "recipe", "literature", "models", "registry"), 1),
    "view": 2,
    **dict.fromkeys(
        ("ingest", "annotate", "propose", "curate", "splits", "export", "evaluate", "train", "cg", "publish", "stream", "stats"),
        3,
    ),
    **dict.fromkeys(("web", "cli", "__main__", "__init__"), 4),
}
NAMES = ("core", "machinery", "read side", "steps", "front ends")
MOST_LINES = 600


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of medloom, at any depth of the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "medloom"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "medloom":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            found += [(m, [], node.lineno) for m in submodules]
            rest = [n for n in names if f"{target}.{n}" not in known]
            if rest:
                found.append((target, rest, node.lineno))
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return LAYERS[top]


def graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    problems = []
    for name, path in mods.items():
        for target, names, line in imports(name, path, known):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target == name:
                continue
            edges[name].add(target)
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if layer_of(target) > layer_of(name):
                problems.append(
                    f"{where}: {name} ({NAMES[layer_of(name)]}) imports {target} ({NAMES[layer_of(target)]}), a layer above"
                )
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{where}: {name} takes private {', '.join(private)} from {target}")
    return edges, problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), ignoring a package's own __init__
    re-exporting its modules (an edge from a package to its own submodule)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def follow(v: str) -> list[str]:
        return [w for w in edges[v] if not w.startswith(v + ".")]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in follow(v):
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in modules() if "." in m} - set(LAYERS))
    assert not missing, f"modules with no layer in tests/test_layers.py LAYERS: {missing}"


def test_imports_go_one_way_and_take_no_private_name():
    _, problems = graph()
    assert not problems, "\n".join(problems)


def test_no_import_circle():
    found = cycles(graph()[0])
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_no_module_is_over_600_lines():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MOST_LINES
    }
    assert not long, long
