"""The package's import picture: its folders are the data flow, each importing only the folders below
it (lazy imports inside functions count too), and no module imports one that imports it back."""

import ast
import collections
from pathlib import Path

KBN = Path(__file__).resolve().parents[1] / "kbn"
# The rooms, bottom up (README, "Layout"): a module may import its own room and the rooms below it.
# The sweep's files (folder, trials, plan, status, view) sit below the report, which reads them; the
# sweep's runner writes the report's TensorBoard summary through kbn.sweep.summary, whose statistics
# are kbn.core.stats'. The package's own files (the CLI, the public API) are the top.
LAYERS = ("core", "data", "models", "runs", "training", "sweep", "report", "tools", "")


def room(module: str) -> str:
    """kbn.sweep.plan -> "sweep"; kbn.cli, kbn -> "" (the top)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (KBN / parts[1]).is_dir()) else ""


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
    assert "kbn.core.config" in graph["kbn.sweep.folder"] and "kbn.models.networks" not in graph["kbn.core.registry"]


def layer_breaks(graph) -> list[str]:
    """Each import of a room above the importer's own: "importer -> imported (room -> room)"."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(f"{m} -> {t} ({room(m) or 'top'} -> {room(t) or 'top'})" for m, targets in graph.items()
                  for t in targets if rank[room(t)] > rank[room(m)])


def test_each_room_imports_only_the_rooms_below_it():
    graph = import_graph()
    assert {room(m) for m in graph} | {room(m) for m in _modules()} <= set(LAYERS), "a folder not in LAYERS"
    assert layer_breaks(graph) == []


def test_the_layer_check_finds_an_import_upwards():
    graph = {"kbn.core.config": {"kbn.training.train"}, "kbn.training.train": {"kbn.core.config"},
             "kbn.cli": {"kbn.sweep.runner"}}
    assert layer_breaks(graph) == ["kbn.core.config -> kbn.training.train (core -> training)"]


def test_the_core_imports_no_keras_at_load():
    """What every room reads stays cheap: none of the core's modules imports Keras (or TensorFlow, JAX)
    at its top level (the CLI chooses the backend from the settings before Keras is imported)."""
    heavy = {"keras", "tensorflow", "jax", "keras_tuner"}
    found = []
    for name, path in _modules().items():
        if room(name) != "core":
            continue
        for node in ast.parse(path.read_text()).body:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{name}: {m}" for m in mods if m.split(".")[0] in heavy]
    assert found == []
