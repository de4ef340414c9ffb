"""The package's shape (shared/docs/architecture.md): no import cycles, and the walls between its rooms.

The import graph is read from the source (an AST walk), not from `sys.modules`: every import in a
file is an edge, those inside function bodies too (a cycle hidden in a function is still a cycle).
Importing `imgcls.a.b` is an edge to `imgcls.a.b` and, from outside `imgcls.a`, to that package on
the way (Python runs its `__init__` first; inside it, the `__init__` is already running). The root
`imgcls/__init__.py` is the public facade, loading its names
lazily; nothing inside the package imports it, which the last test checks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "imgcls"


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(pkg: Path = PKG) -> dict[str, Path]:
    return {module_name(p, pkg): p for p in sorted(pkg.rglob("*.py"))}


def imported_names(path: Path, name: str, is_pkg: bool) -> list[str]:
    """Every absolute module name that `path` imports (relative imports resolved; `from m import x` gives m.x and m)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    mods = modules(pkg)
    root = pkg.name
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for target in imported_names(path, m, path.name == "__init__.py"):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # imgcls.a, imgcls.a.b, ... (not the root facade)
                t = ".".join(parts[:i])
                # a package's __init__ runs first when imported from outside it; from inside, it is already running
                if t in mods and t != m and (i == len(parts) or not m.startswith(t + ".")):
                    graph[m].add(t)
            if target == root and m != root:
                graph[m].add(root)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_sees_imports_inside_functions_and_finds_a_cycle(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from toy.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import toy.a\n")
    (pkg / "d.py").write_text("from toy import c\n")
    (pkg / "sub" / "e.py").write_text("from toy.sub.b import f\n")  # a sibling: no edge to toy.sub's __init__
    g = import_graph(pkg)
    assert g["toy.sub.b"] == {"toy.c"} and g["toy.a"] == {"toy.sub", "toy.sub.b"} and g["toy.sub.e"] == {"toy.sub.b"}
    assert cycles(g) == [["toy.a", "toy.c", "toy.sub.b"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_walls():
    g = import_graph()
    inside = lambda m, room: m == room or m.startswith(room + ".")  # noqa: E731
    for m, targets in g.items():
        if inside(m, "imgcls.models"):
            assert not any(inside(t, "imgcls.data") for t in targets), (m, "models/ must not import data/")
        if inside(m, "imgcls.data"):
            assert not any(inside(t, "imgcls.models") for t in targets), (m, "data/ must not import models/")
        assert "imgcls" not in targets, (m, "imports the public facade imgcls/__init__; import the module itself")
    assert not any(inside(t, "imgcls.models") for t in g["imgcls.modelfile"]), "modelfile.py must be a leaf"


def test_only_the_cli_layer_imports_hydra():
    for m, path in modules().items():
        if inside_cli(m):
            continue
        names = imported_names(path, m, path.name == "__init__.py")
        assert not [n for n in names if n.split(".")[0] in ("hydra", "omegaconf")], f"{m} imports Hydra"


def inside_cli(m: str) -> bool:
    return m == "imgcls.cli" or m.startswith("imgcls.cli.")
