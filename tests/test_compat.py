"""kbn.core.compat, the border to upstream private code: the versions installed are the ones checked, the
upstream code kbn copies is unchanged, each private name still exists, and no use of one lives
anywhere else in kbn/ (the scan below: add a use outside compat.py and it fails)."""

import ast
import functools
import importlib
import importlib.metadata
import inspect
import re
from pathlib import Path

from kbn.core import compat

KBN = Path(compat.__file__).resolve().parents[1]  # kbn/, which holds core/compat.py
# a private name of an upstream *stdlib* module that is documented public API
STDLIB_OK = {"os._exit"}
PRIVATE = re.compile(r"^_[A-Za-z0-9]\w*$")  # _name, not __dunder__
GETATTRS = {"getattr", "hasattr", "setattr", "delattr"}


def _version(text: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def test_the_installed_versions_are_the_ones_checked():
    for name, (dist, low, high) in sorted(compat.CHECKED.items()):
        have = _version(importlib.metadata.version(dist))
        lo, hi = _version(low), _version(high)
        assert lo <= have[:len(lo)] and have[:len(hi)] <= hi, (
            f"{dist} {importlib.metadata.version(dist)} is outside {low}-{high}, the versions kbn/core/compat.py's "
            f"{name} was checked against: re-read its note against this version and update CHECKED")


def test_every_compat_function_is_in_checked():
    public = {n for n, f in vars(compat).items() if callable(f) and not inspect.isclass(f) and getattr(f, "__module__", "") == compat.__name__
              and not n.startswith("_")} - {"fingerprint", "upstream_code"}
    assert public == set(compat.CHECKED)


def test_the_upstream_code_kbn_copies_is_unchanged():
    code = compat.upstream_code()
    assert set(code) == set(compat.FINGERPRINTS)
    for name, (cls, method) in code.items():
        dist, low, high = compat.KERAS_TUNER if name.startswith("keras_tuner") else compat.KERAS
        assert compat.fingerprint(cls, method) in compat.FINGERPRINTS[name], (
            f"{name} changed since kbn copied it (checked {low}-{high}): re-read kbn/core/compat.py's note and update")


def test_a_changed_upstream_function_changes_its_fingerprint():
    class A:
        def f(self):
            """Doc."""
            return 1  # a comment

    class B:
        def f(self):
            return 1

    class C:
        def f(self):
            return 2

    assert compat.fingerprint(A, "f") == compat.fingerprint(B, "f") != compat.fingerprint(C, "f")


# ---------------------------------------------------------------- each private name still exists

def test_the_oracle_privates_exist(tmp_path):
    import keras_tuner as kt

    oracle = compat.oracle_class()(objective=kt.Objective("score", "max"), max_trials=None)
    oracle._set_project_dir(str(tmp_path), "p")
    for name in ("_retry_queue", "_run_times", "_tried_so_far", "_id_to_hash", "_record_values", "_save_trial"):
        assert hasattr(oracle, name), f"keras_tuner Oracle has no {name} any more: see kbn/core/compat.py"
    assert compat.oracle_project_dir(oracle) == tmp_path / "p"
    assert compat.oracle_file(oracle) == tmp_path / "p" / "oracle.json"
    assert compat.oracle_trial_file(oracle, "0007") == tmp_path / "p" / "trial_0007" / "trial.json"
    assert not compat.oracle_has_retries(oracle)
    compat.oracle_reset_queues(oracle, ["0002", "0001"])
    assert compat.oracle_has_retries(oracle) and oracle.get_state()["retry_queue"] == ["0002", "0001"]


def test_the_tuner_and_grpc_privates_exist():
    from keras_tuner.engine import base_tuner

    for name in ("_is_worker", "_get_tuner_fname", "_run_and_update_trial"):
        assert callable(getattr(base_tuner.BaseTuner, name, None)), f"BaseTuner has no {name}: see kbn/core/compat.py"
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    assert hasattr(protos.get_service_grpc(), "add_OracleServicer_to_server")
    assert hasattr(oracle_chief, "OracleServicer")


def test_the_keras_privates_exist():
    import keras
    import numpy as np

    inp = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")
    out = keras.layers.Dense(2, name="out")
    model = keras.Model(inp, out(hidden(inp)))
    assert compat.layer_parents(out) == [hidden] and compat.layer_children(hidden) == [out]
    model.compile(optimizer=keras.optimizers.SGD(0.25), loss="mse")
    compat.symbolic_build(model, (np.zeros((2, 3), "float32"), np.zeros((2, 2), "float32")))
    assert model.optimizer.built and len(model.optimizer.variables) > 0
    rate = compat.optimizer_lr_variable(model.optimizer)
    assert isinstance(rate, keras.Variable) and float(rate.numpy()) == 0.25
    from keras.src.utils import module_utils

    assert hasattr(module_utils.tensorflow, "_available") and hasattr(module_utils.tensorflow, "module")
    for name in ("_trainable_variables", "_get_variable_index", "_use_weight_decay", "_apply_weight_decay"):
        assert hasattr(model.optimizer, name), f"keras optimizers have no {name}: see kbn/core/compat.py"


def test_per_variable_lr_gives_each_variable_its_rate():
    import keras
    import numpy as np

    v, w = keras.Variable(np.ones(2, "float32"), name="v"), keras.Variable(np.ones(2, "float32"), name="w")
    rates = {v.path: np.array([0.5, 2.0], "float32")}
    opt = compat.per_variable_lr(keras.optimizers.SGD, rates.get)(learning_rate=1.0)
    opt.apply([np.ones(2, "float32"), np.ones(2, "float32")], [v, w])
    assert np.allclose(v.numpy(), [0.5, -1.0]) and np.allclose(w.numpy(), [0.0, 0.0])


def test_hparams_summary_holds_the_plugin_data():
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(status=1))
    pb = compat.hparams_summary(metadata.SESSION_END_INFO_TAG, data)
    assert pb.value[0].tag == metadata.SESSION_END_INFO_TAG
    assert pb.value[0].metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME


# ---------------------------------------------------------------- the border's guard

def _files():
    return [p for p in sorted(KBN.rglob("*.py")) if p.name != "compat.py"]


def _module(path: Path) -> str:
    return "kbn." + ".".join(path.relative_to(KBN).with_suffix("").parts).removesuffix(".__init__")


def _classes(path: Path, tree) -> dict:
    """Each module-level class of a file -> its upstream bases' private names (None: no upstream base).
    Only a file with classes is imported (kbn/__main__.py runs the CLI)."""
    nodes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    module = importlib.import_module(_module(path)) if nodes else None
    return {n: _upstream_privates(getattr(module, n.name)) for n in nodes}


@functools.cache
def _upstream_privates(cls) -> frozenset | None:
    """Private names of `cls`'s bases from outside kbn (None: it has none), from their attributes
    and their source's `self._x`."""
    names, upstream = set(), False
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("kbn") or base.__module__ == "builtins":
            continue
        upstream = True
        names |= {n for n in vars(base) if PRIVATE.match(n)}
        try:
            names |= set(re.findall(r"self\.(_[A-Za-z0-9]\w*)", inspect.getsource(base)))
        except (OSError, TypeError):  # a class of C code
            pass
    return frozenset(names) if upstream else None


def _own_names(trees) -> set:
    """The private names kbn defines: module-level, and in classes without upstream bases."""
    own = set()
    for path, tree in trees:
        classes = _classes(path, tree)
        for node in tree.body:
            if classes.get(node) is not None:
                continue
            for n in ast.walk(node):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    own.add(n.name)
                elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                    own.add(n.id)
                elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and ast.unparse(n.value) == "self":
                    own.add(n.attr)
    return {n for n in own if PRIVATE.match(n)}


def _accesses(node):
    """(line, receiver, name) of each private attribute read or written under `node`, getattr's too."""
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and PRIVATE.match(n.attr):
            yield n.lineno, ast.unparse(n.value), n.attr
        elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in GETATTRS and len(n.args) > 1
              and isinstance(n.args[1], ast.Constant) and PRIVATE.match(str(n.args[1].value))):
            yield n.lineno, ast.unparse(n.args[0]), n.args[1].value


def _imports(path, tree):
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            mods = [(a.name, None) for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module != "__future__":
            mods = [(n.module, a.name) for a in n.names]
        else:
            continue
        for mod, name in mods:
            if mod.split(".")[0] == "kbn":
                continue
            if any(p == "src" or p.startswith("_") for p in mod.split(".")[1:]) or (name and PRIVATE.match(name)):
                yield f"{path.relative_to(KBN.parent)}:{n.lineno}: imports {mod}{'.' + name if name else ''}"


def private_uses_outside_compat() -> list[str]:
    trees = [(p, ast.parse(p.read_text())) for p in _files()]
    own, out = _own_names(trees), []
    for path, tree in trees:
        where = path.relative_to(KBN.parent)
        out += list(_imports(path, tree))
        classes = _classes(path, tree)
        for node in ast.walk(tree):  # classes inside functions: their bases cannot be known here
            if isinstance(node, ast.ClassDef) and node not in classes:
                out.append(f"{where}:{node.lineno}: class {node.name} inside a function: define it at module "
                           "level, or in kbn/core/compat.py")
        for cls, upstream in classes.items():
            for n in ast.walk(cls):
                if upstream and isinstance(n, ast.FunctionDef) and n.name in upstream:
                    out.append(f"{where}:{n.lineno}: {cls.name} overrides the upstream private {n.name}")
        for line, receiver, name in _accesses(tree):
            cls = next((c for c in classes if c.lineno <= line <= c.end_lineno), None)
            if receiver in ("self", "cls") and cls is not None:
                if classes[cls] and name in classes[cls]:
                    out.append(f"{where}:{line}: {receiver}.{name} is {cls.name}'s upstream base's private")
            elif name not in own and f"{receiver}.{name}" not in STDLIB_OK:
                out.append(f"{where}:{line}: {receiver}.{name} is not kbn's own")
    return sorted(out, key=lambda f: (f.split(":")[0], int(f.split(":")[1])))


def test_every_private_use_lives_in_compat():
    found = private_uses_outside_compat()
    assert not found, ("private upstream code used outside kbn/core/compat.py (move it there, with the version range "
                       "checked):\n" + "\n".join(found))


PROBES = ["from keras.src.utils import module_utils", "import keras_tuner.src.protos",
          "model._symbolic_build(data_batch=b)", "rate = getattr(opt, '_learning_rate', None)",
          "return layer._inbound_nodes"]


def test_the_guard_fails_on_a_private_use_added_outside_compat():
    probe = KBN / "zz_compat_probe.py"
    probe.write_text("def probe(model, b, opt, layer):\n" + "".join(f"    {line}\n" for line in PROBES))
    try:
        found = private_uses_outside_compat()
    finally:
        probe.unlink()
    flagged = {int(f.split(":")[1]) for f in found if f.startswith("kbn/zz_compat_probe.py:")}
    assert flagged == set(range(2, 2 + len(PROBES))), found
