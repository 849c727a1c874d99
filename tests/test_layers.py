"""The package's import picture: no circles (lazy imports inside functions count too), and the core
modules (settings, checks, the registry, errors: what every other room reads) import only each other."""

import ast
import collections
from pathlib import Path

KBN = Path(__file__).resolve().parents[1] / "kbn"
# settings, their checks, the component registry and kbn's error kinds, and the small services every
# room uses: no Keras at load, no data, no training, no sweep folder, no report
CORE = {"kbn.errors", "kbn.checks", "kbn.compat", "kbn.console", "kbn.clock", "kbn.interrupts", "kbn.registry",
        "kbn.config", "kbn.trials", "kbn.stability", "kbn.precision", "kbn.resources"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in KBN.rglob("*.py"):
        parts = p.relative_to(KBN.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """kbn module -> the kbn modules it imports anywhere in its file (`from kbn import x` is kbn.x)."""
    mods = _modules()
    graph = collections.defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            else:
                continue
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def circles(graph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, found, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_check_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "kbn.config" in graph["kbn.sweep_folder"] and "kbn.models" not in graph["kbn.registry"]


def test_core_imports_only_core():
    graph = import_graph()
    outside = {m: sorted(graph[m] - CORE - {"kbn"}) for m in CORE if graph[m] - CORE - {"kbn"}}
    assert outside == {}, f"core modules importing other rooms: {outside}"
    assert CORE <= set(_modules()), "a CORE name is not a module"
