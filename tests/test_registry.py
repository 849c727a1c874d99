"""kbn.core.registry: one record per component; a researcher's own optimizer, network, norm and dataset
through import strings, tfds: and npz:, from `kbn train` and a sweep to the report."""

import ast
import json
import shutil
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from kbn.core import registry
from kbn.cli import main
from kbn.core.config import TrainConfig, load_sweep, sweep_from_dict
from kbn.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
KBN = ROOT / "kbn"
USER = "tests.user_parts"


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # `tests.user_parts:...` imports from the repository root


@pytest.fixture
def write_npz(make_images):
    """`write_npz(path, n_train=300, n_test=60, classes=4)`: a dataset of one's own, 4 classes of 20x20
    grey images; returns its npz:PATH name."""
    def write(path, n_train=300, n_test=60, classes=4):
        xtr, ytr = make_images(n_train, 0, (20, 20, 1))
        xte, yte = make_images(n_test, 1, (20, 20, 1))
        np.savez(path, x_train=xtr[..., 0], y_train=ytr % classes, x_test=xte[..., 0], y_test=yte % classes)
        return f"npz:{path}"

    return write


# ---------------------------------------------------------------- one place per built-in


def _name_sets():
    """Every literal tuple, list, set or dict in kbn (outside registry.py) holding two or more
    built-in names of one kind, with the function holding it: a parallel list that a new built-in
    would have to be added to."""
    names = {kind: set(reg) - {"none"} for kind, reg in registry.REGISTRIES.items()}
    found = set()

    class Finder(ast.NodeVisitor):
        def __init__(self, file):
            self.file, self.where = file, ["<module>"]

        def visit_FunctionDef(self, node):
            self.where.append(node.name)
            self.generic_visit(node)
            self.where.pop()

        def generic_visit(self, node):
            elts = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                strings = {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                for kind, known in names.items():
                    if len(strings & known) >= 2:
                        found.add((self.file, self.where[-1], kind, tuple(sorted(strings & known))))
            super().generic_visit(node)

    for path in sorted(KBN.rglob("*.py")):
        if path.name != "registry.py":
            Finder(str(path.relative_to(KBN))).visit(ast.parse(path.read_text()))
    return found


# The findings check the thesis's and the poster's claims, which are about named methods.
CLAIMS_ABOUT_NAMES = {
    ("report/findings.py", "claim_chance", "optimizer", ("adadelta", "sgd", "sgdm")),
    ("report/findings.py", "claim_poster", "norm", ("batch", "layer")),
}


def test_no_module_keeps_its_own_list_of_names():
    assert _name_sets() - CLAIMS_ABOUT_NAMES == set(), "keep these in kbn/core/registry.py and derive them from it"


def test_the_completeness_check_finds_a_parallel_list(tmp_path, monkeypatch):
    (tmp_path / "leaky.py").write_text('FAST = ("mlp", "deep_mlp")\n\n\ndef f(x):\n'
                                       '    return x in {"sgd": 1, "adam": 2}\n')
    monkeypatch.setattr(f"{__name__}.KBN", tmp_path)
    assert _name_sets() == {("leaky.py", "<module>", "arch", ("deep_mlp", "mlp")),
                            ("leaky.py", "f", "optimizer", ("adam", "sgd"))}


def _add(monkeypatch, kind, rec):
    table = {"optimizer": "OPTIMIZERS", "norm": "NORMS", "arch": "ARCHS", "dataset": "DATASETS"}[kind]
    new = MappingProxyType({**registry.REGISTRIES[kind], rec.name: rec})
    monkeypatch.setattr(registry, table, new)
    monkeypatch.setattr(registry, "REGISTRIES", MappingProxyType({**registry.REGISTRIES, kind: new}))


def test_a_new_built_in_is_one_record(monkeypatch, tmp_path, make_idx_folder):
    """A record added to the registry alone is accepted everywhere: config, optimizers, models,
    data and the report's names and families."""
    from kbn import data
    from kbn import models
    from kbn.models import optimizers as optim
    from kbn.report.labels import display_name

    _add(monkeypatch, "optimizer", registry.Optimizer("sgdm5", "SGDm½", "plain", "SGD", (("momentum", 0.5),)))
    _add(monkeypatch, "arch", registry.Arch("wide_mlp", "wide MLP", "mlp"))
    _add(monkeypatch, "norm", registry.Norm("unit", "unit", "tab:purple", "UnitNormalization"))
    make_idx_folder(tmp_path / "kmnist")
    _add(monkeypatch, "dataset", registry.Dataset("kmnist", "KMNIST", 1 / 6, 10, "idx", (str(tmp_path / "kmnist"),)))
    cfg = TrainConfig(dataset="kmnist", arch="wide_mlp", norm="unit", optimizer="sgdm5")
    assert optim.make_optimizer(cfg.optimizer, 0.1).momentum == pytest.approx(0.5)
    ds = data.load("cluttered_kmnist", verbose=False)
    assert ds.num_classes == 10 and ds.sizes() == {"train": 50, "validation": 10, "test": 12}
    net = models.build("wide_mlp", ds.input_shape, norm="unit")
    assert [type(lay).__name__ for lay in net.layers].count("UnitNormalization") == 3
    assert display_name("cluttered_kmnist", "wide_mlp") == "cluttered KMNIST + wide MLP"
    assert registry.display("optimizer", "sgdm5") == "SGDm½" and registry.family("sgdm5") == "plain"
    from kbn.models.packed import cannot_pack

    assert "no rule for UnitNormalization" in cannot_pack(net, "sgdm5")


# ---------------------------------------------------------------- names and import strings


def test_names_are_checked_without_importing_anything():
    cfg = TrainConfig(optimizer="nosuch.module:Opt", arch="a.b:net", norm="c:Norm", dataset="tfds:kmnist")
    assert cfg.run_name() == "kmnist-net-Norm-Opt-lr0.001-s0"
    for field, bad in (("optimizer", "lbfgs"), ("arch", "a.b:"), ("norm", "mod:1x"), ("dataset", "kmnist")):
        with pytest.raises(ConfigError) as e:
            TrainConfig(**{field: bad})
        assert str(e.value).startswith(f"{field}: unknown value {bad!r}; choose from:") and "\n" not in str(e.value)
    assert registry.slug("npz:/data/my-set.npz") == "my_set" and registry.slug("cluttered_tfds:svhn_cropped") == \
        "cluttered_svhn_cropped"


def test_a_sweep_refuses_two_names_with_one_short_name():
    raw = {"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["a:Lion", "b.c:Lion"],
           "epochs": 1}
    with pytest.raises(ConfigError, match="'a:Lion' and 'b.c:Lion' have the same short name 'Lion'"):
        sweep_from_dict(raw)


@pytest.mark.parametrize("kind,spec,expect", [
    ("optimizer", "nosuch_kbn_module:Opt", "cannot import module 'nosuch_kbn_module' (No module named"),
    ("optimizer", f"{USER}:Nope", f"module '{USER}' ({ROOT / 'tests' / 'user_parts.py'}) has no attribute 'Nope'"),
    ("optimizer", f"{USER}:NOT_CALLABLE", "names int 3, not a Keras optimizer class"),
    ("optimizer", f"{USER}:ScaleNorm", f"names class {USER}.ScaleNorm, not a Keras optimizer class"),
    ("norm", f"{USER}:two_layer", "names function two_layer, not a Keras layer class"),
    ("arch", f"{USER}:ScaleNorm", f"names class {USER}.ScaleNorm, not a builder function"),
])
def test_a_bad_import_string_fails_before_training_in_one_line(kind, spec, expect, tmp_path, capsys, write_npz):
    npz = write_npz(tmp_path / "d.npz")
    code = main(["train", "--dataset", npz, f"--{kind}", spec, "--epochs", "1", "--logdir", str(tmp_path / "r"),
                 "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{spec!r}" in err and expect in err, repr(err)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())  # nothing trained


@pytest.mark.slow
def test_a_builder_with_the_norm_misplaced_is_refused_with_the_layer(tiny_dataset):
    from kbn import models
    from kbn.models import networks

    with pytest.raises(ConfigError) as e:
        models.build(f"{USER}:norm_after_activation", (28, 28, 1), 10, "batch")
    assert str(e.value) == (f"arch: '{USER}:norm_after_activation' with norm 'batch': BatchNormalization 'late_norm' "
                            "follows Dense 'hidden', not a linear map; place norms with kbn.models.norm_layer or "
                            "dense_block")
    with pytest.raises(ConfigError, match=r"no LayerNormalization layer in the model \(it holds InputLayer, Flatten"):
        networks.check_norm_placement(models.build("mlp", (28, 28, 1)), registry.get("norm", "layer"), "mlp")
    net = models.build(f"{USER}:two_layer", (28, 28, 1), 10, f"{USER}:ScaleNorm")
    assert [lay.name for lay in net.layers if type(lay).__name__ == "ScaleNorm"] == ["hidden1_ScaleNormnorm",
                                                                                     "hidden2_ScaleNormnorm"]
    for norm in registry.NORMS:  # kbn's own networks pass the same check
        networks.check_norm_placement(models.build("cnn", (28, 28, 1), norm=norm), registry.get("norm", norm), "cnn")


# ---------------------------------------------------------------- datasets of one's own


def test_npz_dataset_splits_counts_classes_and_says_what_is_wrong(tmp_path, write_npz):
    from kbn import data
    from kbn.core.errors import DataError

    ds = data.load(write_npz(tmp_path / "four.npz"), verbose=False)
    assert ds.num_classes == 4 and ds.sizes() == {"train": 250, "validation": 50, "test": 60}
    assert ds.input_shape == (20, 20, 1) and ds.validation_fraction == registry.DEFAULT_VALIDATION_FRACTION
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((3, 4, 4)), y_train=np.zeros(3, int))
    with pytest.raises(DataError, match=r"holds x_train, y_train; missing x_test, y_test"):
        data.load(f"npz:{tmp_path / 'bad.npz'}", verbose=False)


@pytest.mark.slow
def test_tfds_dataset_takes_its_class_count_from_the_builder(monkeypatch):
    import tensorflow_datasets as tfds

    from kbn import data

    monkeypatch.setenv("KBN_OFFLINE", "0")
    with tfds.testing.mock_data(num_examples=60):
        ds = data.load("tfds:cifar100", verbose=False)
    assert ds.num_classes == 100 and ds.sizes() == {"train": 50, "validation": 10, "test": 60}
    assert data.cache_path("tfds:cifar100").name == "tfds_cifar100.npz" and data.cache_path("tfds:cifar100").is_file()
    assert data.load("tfds:cifar100", verbose=False).num_classes == 100  # from the cache, no tfds


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_kbn_train_with_ones_own_optimizer_network_norm_and_data(tmp_path, capsys, write_npz):
    npz = write_npz(tmp_path / "four.npz")
    args = ["train", "--dataset", npz, "--arch", f"{USER}:two_layer", "--norm", f"{USER}:ScaleNorm", "--optimizer",
            f"{USER}:half_momentum", "--lr", "0.05", "--epochs", "2", "--batch-size", "32",
            "--logdir", str(tmp_path / "r"), "-q"]
    assert main(args) == 0
    folder = tmp_path / "r" / "four-two_layer-ScaleNorm-half_momentum-lr0.05-s0"
    config = json.loads((folder / "config.json").read_text())
    assert config["settings"]["optimizer"] == f"{USER}:half_momentum"
    assert config["data"]["num_classes"] == 4 and config["data"]["validation_fraction"] == pytest.approx(1 / 6)
    opt = config["components"]["optimizer"]
    user_file = ROOT / "tests" / "user_parts.py"
    assert opt["family"] == "plain" and opt["file"] == str(user_file)
    assert opt["sha256"] == registry.file_hash(user_file) and config["components"]["arch"]["display"] == "two_layer"
    assert config["components"]["dataset"]["sha256"] == registry.file_hash(tmp_path / "four.npz")
    result = json.loads((folder / "result.json").read_text())
    assert result["metrics"]["test_accuracy"] > 0.4  # 4 learnable classes: above chance (25%)


@pytest.mark.slow
def test_a_sweep_of_ones_own_components_runs_reports_and_refuses_a_changed_module(tmp_path, capsys, monkeypatch, write_npz):
    lab = tmp_path / "lab"
    lab.mkdir()
    shutil.copy(ROOT / "tests" / "user_parts.py", lab / "kbn_test_parts.py")
    monkeypatch.syspath_prepend(str(lab))
    npz = write_npz(tmp_path / "four.npz")
    sweep = tmp_path / "own.toml"
    fields = {"name": "own", "datasets": [npz], "archs": ["kbn_test_parts:two_layer"],
              "norms": ["none", "kbn_test_parts:ScaleNorm"], "optimizers": ["kbn_test_parts:half_momentum"],
              "epochs": 2, "seeds": [0, 1], "batch_size": 32}
    sweep.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())  # JSON values are TOML too
                     + "[search]\ncoarse = [0.01, 0.1]\nfine_per_side = 0\n")
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--logdir", str(out), "--workers", "1", "--pack", "2"]) == 0
    printed = capsys.readouterr().out
    why = ("optimizer kbn_test_parts:half_momentum is not kbn's own (packing needs an update linear in the "
           "learning rate)")
    assert f"kbn sweep: cell four-two_layer-ScaleNorm-half_momentum trains unpacked: {why}" in printed
    assert len(list((out / "runs").iterdir())) == 4
    components = json.loads((out / "components.json").read_text())
    assert set(components) == {"kbn_test_parts:two_layer", "kbn_test_parts:ScaleNorm", "kbn_test_parts:half_momentum",
                               str((tmp_path / "four.npz").resolve())}
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "half_momentum" in text and "four + two_layer" in text  # Table 1 and the pair: nothing dropped
    from kbn import report

    scan = report.scan_runs(out)
    res = report.Results(report.long_from_runs(scan.runs))
    assert res.pairs() == [(npz, "kbn_test_parts:two_layer")]
    with registry.learnt(scan.facts):  # learnt from the run folders, for this report
        assert registry.family("kbn_test_parts:half_momentum") == "plain"

    (lab / "kbn_test_parts.py").write_text((lab / "kbn_test_parts.py").read_text() + "\n# changed\n")
    import importlib
    import sys

    sys.modules.pop("kbn_test_parts", None)
    importlib.invalidate_caches()
    assert main(["sweep", str(sweep), "--logdir", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    old, new = components["kbn_test_parts:two_layer"]["sha256"], registry.file_hash(lab / "kbn_test_parts.py")
    assert err == [f"kbn: error: {out}: optimizer kbn_test_parts:half_momentum: {lab / 'kbn_test_parts.py'} changed since these "
                   f"runs were made (sha256 {old[:12]} -> {new[:12]}); restore it, or use another --logdir for the "
                   "changed one"]


@pytest.mark.slow
def test_a_finished_run_is_not_returned_for_a_changed_module(tiny_dataset, tmp_path, monkeypatch):
    from kbn.training.train import train

    (tmp_path / "lab").mkdir()
    module = tmp_path / "lab" / "kbn_test_run_parts.py"
    shutil.copy(ROOT / "tests" / "user_parts.py", module)
    monkeypatch.syspath_prepend(str(tmp_path / "lab"))
    cfg = TrainConfig(arch="kbn_test_run_parts:two_layer", epochs=1, batch_size=64)
    assert train(cfg, tmp_path / "r", verbose=False, dataset=tiny_dataset).status == "finished"
    old = registry.file_hash(module)
    module.write_text(module.read_text().replace("Dense(32)", "Dense(32) "))
    with pytest.raises(ConfigError) as e:
        train(cfg, tmp_path / "r", verbose=False, dataset=tiny_dataset)
    assert str(e.value) == (f"logdir: {tmp_path / 'r' / cfg.run_name()}: arch kbn_test_run_parts:two_layer: {module} "
                            f"changed since these runs were made (sha256 {old[:12]} -> "
                            f"{registry.file_hash(module)[:12]}); restore it, or use another --logdir for the changed one")


@pytest.mark.slow
def test_what_packing_has_no_rule_for_trains_unpacked_saying_so(tiny_dataset, tmp_path):
    from kbn.training.train import train_many

    said = []
    cfgs = [TrainConfig(arch=f"{USER}:two_layer", norm=f"{USER}:ScaleNorm", optimizer="sgd", lr=lr, epochs=1,
                        batch_size=64) for lr in (0.01, 0.1)]
    results = train_many(cfgs, tmp_path, dataset=tiny_dataset, log=said.append)
    assert [r.status for r in results] == ["finished", "finished"]
    assert [s for s in said if "unpacked" in s] == [
        f"kbn: {cfgs[0].run_name()} and 1 more train one by one, unpacked: packing has no rule for ScaleNorm "
        "(hidden1_ScaleNormnorm)"]
    config = json.loads((results[1].folder / "config.json").read_text())
    assert config["schedule"]["packed_with"] == 1


def test_the_example_sweep_names_its_own_components():
    sweep = load_sweep(ROOT / "examples" / "your_own" / "sweep.toml")
    assert sweep.optimizers == ("adam", "examples.your_own.mine:SignSGD")
    facts = registry.user_components({"optimizer": sweep.optimizers[1], "arch": sweep.archs[0]})
    assert facts["optimizer"]["family"] == "plain" and facts["optimizer"]["display"] == "signSGD"
    assert facts["arch"]["display"] == "residual MLP"
    from kbn import models
    from kbn.models import packed

    net = models.build(sweep.archs[0], (28, 28, 1), 10, "batch")
    assert packed.cannot_pack(net, "adam") == "packing has no rule for Add (res1_add)"  # trains unpacked


@pytest.mark.slow
def test_a_run_with_ones_own_optimizer_class_keeps_its_trained_network(tiny_dataset, tmp_path):
    """Keras cannot rebuild an unregistered optimizer class from its config: the saved network must
    not go through the compiled model (it did: every final run of the example failed)."""
    import keras

    from kbn.training.train import train

    cfg = TrainConfig(optimizer="examples.your_own.mine:SignSGD", arch="examples.your_own.mine:residual_mlp",
                      norm="batch", lr=1e-3, epochs=1, batch_size=64)
    res = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    assert res.status == "finished"
    net = keras.saving.load_model(res.folder / "model.keras")
    assert net.count_params() == 136_330  # 784*128+128 + 2*(128*128+128) + 3*(4*128) + 128*10+10



@pytest.mark.parametrize("kind, spec, call", [
    ("arch", f"{USER}:images_only", "builder(input_shape, num_classes, norm=...)"),
    ("optimizer", f"{USER}:fixed_rate", "factory(lr)"),
    ("norm", "tests.bad_parts:NeedsArgNorm", "Layer(name=...)"),
])
def test_a_component_kbn_cannot_call_is_refused_naming_the_call_and_the_contract(kind, spec, call):
    """Before anything trains: one line with the component's signature, how kbn calls it, and the
    Protocol that states it (kbn.NetworkBuilder, kbn.OptimizerFactory, kbn.NormLayerClass)."""
    contract = {"arch": "NetworkBuilder", "optimizer": "OptimizerFactory", "norm": "NormLayerClass"}[kind]
    with pytest.raises(ConfigError) as e:
        registry.get(kind, spec).resolve(kind)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{kind}: '{spec}' takes (")
    assert f"kbn calls it as {call}" in msg and msg.endswith(f"see kbn.{contract}")


def test_kbns_own_components_and_the_examples_keep_the_contracts():
    import keras

    import kbn
    from kbn import models
    from kbn.core.contracts import unfit

    assert all(unfit(b, kbn.NetworkBuilder) is None for b in models.BUILDERS.values())
    for name in registry.OPTIMIZERS:
        rec = registry.get("optimizer", name)
        assert unfit(getattr(keras.optimizers, rec.keras_class), kbn.OptimizerFactory) is None, name
    for name in registry.NORMS:
        cls = registry.get("norm", name).resolve()
        assert cls is None or unfit(cls, kbn.NormLayerClass) is None, name
    for spec, contract in (("examples.your_own.mine:residual_mlp", kbn.NetworkBuilder),
                           ("examples.your_own.mine:SignSGD", kbn.OptimizerFactory),
                           (f"{USER}:ScaleNorm", kbn.NormLayerClass), (f"{USER}:half_momentum", kbn.OptimizerFactory)):
        assert unfit(registry.import_object("x", spec)[0], contract) is None, spec
