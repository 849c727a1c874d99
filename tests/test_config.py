"""kbn.core.config: a run's settings and a sweep file, validated on load (one line naming the field, the
value and the choices), and the bundled sweep files."""

from pathlib import Path

import pytest

from kbn.core.config import TrainConfig, load_sweep, sweep_from_dict
from kbn.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("dataset", "imagenet", ["dataset", "'imagenet'", "mnist", "cifar10", "fashion_mnist"]),
        ("arch", "resnet", ["arch", "'resnet'", "deep_cnn", "ioffe_mlp"]),
        ("norm", "weight", ["norm", "'weight'", "batch", "layer"]),
        ("optimizer", "lion", ["optimizer", "'lion'", "sgdm", "adadelta"]),
        ("lr", -0.1, ["lr", "-0.1", "positive"]),
        ("lr", 0.0, ["lr", "positive"]),
        ("epochs", 0, ["epochs", "0", "positive integer"]),
        ("batch_size", 2.5, ["batch_size", "2.5"]),
        ("subset", -5, ["subset", "-5"]),
        ("seed", -1, ["seed", "-1"]),
        ("activation", "softplus2", ["activation", "relu"]),
        ("precision", "float16", ["precision", "'float16'", "float32, mixed_bfloat16"]),
    ],
)
def test_bad_values_name_field_value_and_choices(field, value, expect):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value})
    msg = str(e.value)
    assert "\n" not in msg
    for part in expect:
        assert part in msg


def test_total_steps_needs_eval_every_steps():
    with pytest.raises(ConfigError, match="eval_every_steps"):
        TrainConfig(total_steps=100)


def test_run_name_is_stable_and_descriptive():
    a = TrainConfig(dataset="mnist", arch="cnn", norm="batch", optimizer="sgdm", lr=0.01, seed=3)
    assert a.run_name() == "mnist-cnn-batch-sgdm-lr0.01-s3"
    assert TrainConfig(subset=1000).run_name().endswith("-n1000")
    assert a.run_name() == TrainConfig(**a.to_dict()).run_name()


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_every_bundled_sweep_file_is_valid(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem and sweep.cells()


def test_bundled_sweeps_cover_the_study():
    shallow = load_sweep(ROOT / "sweeps/thesis-shallow.toml")
    assert set(shallow.datasets) == {"mnist", "cifar10"} and set(shallow.archs) == {"mlp", "cnn"}
    assert shallow.optimizers == ("sgd", "sgdm", "adam", "adagrad", "adadelta", "rmsprop") and shallow.epochs == 50
    assert len(shallow.cells()) == 48
    deep = load_sweep(ROOT / "sweeps/thesis-deep.toml")
    assert set(deep.archs) == {"deep_mlp", "deep_cnn"}
    poster = load_sweep(ROOT / "sweeps/poster-norms.toml")
    assert poster.norms == ("none", "batch", "layer") and poster.batch_size == 60
    assert poster.eval_every_steps == 5000 and poster.total_steps == 50000
    assert set(load_sweep(ROOT / "sweeps/fashion-full.toml").datasets) == {"fashion_mnist"}


@pytest.mark.parametrize(
    "text,expect",
    [
        ('datasets = ["imagenet"]', ["datasets[0]", "'imagenet'", "cifar10"]),
        ('norms = ["none", "weight"]', ["norms[1]", "'weight'", "layer"]),
        ('archs = ["resnet"]', ["archs[0]", "'resnet'", "deep_cnn"]),
        ('optimizers = ["lion"]', ["optimizers[0]", "'lion'", "adadelta"]),
        ("epochs = 0", ["epochs", "0"]),
        ('epochs = "ten"', ["epochs", "'ten'"]),
        ("colour = 3", ["unknown field 'colour'", "datasets", "select_on"]),
        ('select_on = "train"', ["select_on", "'train'", "validation, test"]),
        ('precision = "mixed_float16"', ["precision", "'mixed_float16'", "float32, mixed_bfloat16"]),
        ("seeds = []", ["seeds"]),
        ("[search]\ncoarse = []", ["search.coarse", "non-empty"]),
        ("[search]\ncoarse = [0.1, -1]", ["search.coarse[1]", "-1"]),
        ("[search]\nfine = 2", ["search.fine", "fine_per_side"]),
        ("[search.coarse_by_optimizer]\nadam = [0.1]", ["coarse_by_optimizer", "'adam'", "sgd"]),
    ],
)
def test_bad_sweep_files_name_file_field_and_choices(tmp_path, text, expect):
    base = {"datasets": '["mnist"]', "archs": '["mlp"]', "norms": '["none"]', "optimizers": '["sgd"]', "epochs": "1"}
    key = text.split("=")[0].strip()
    lines = [f"{k} = {v}" for k, v in base.items() if k != key]
    f = tmp_path / "bad.toml"
    f.write_text("\n".join(lines) + "\n" + text + "\n")
    with pytest.raises(ConfigError) as e:
        load_sweep(f)
    msg = str(e.value)
    assert msg.startswith(str(f)) and "\n" not in msg
    for part in expect:
        assert part in msg, msg


def test_unreadable_or_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_sweep(tmp_path / "missing.toml")
    (tmp_path / "b.toml").write_text("datasets = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sweep(tmp_path / "b.toml")


def test_search_seeds_must_not_be_final_seeds():
    with pytest.raises(ConfigError, match=r"search.seeds: \[1\] shares \[1\] with seeds \[0, 1\]"):
        sweep_from_dict({"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"],
                         "epochs": 1, "seeds": [0, 1], "search": {"seeds": [1]}})


@pytest.mark.parametrize("change,expect", [
    ("epochs = 1\neval_every_steps = 50\ntotal_steps = 20", "eval_every_steps: 50 is more than total_steps 20"),
    ("epochs = 1\n[search]\nepochs = 5", "search.epochs: 5 is longer than the final runs' 1 epochs"),
    ("epochs = 1\n[search.coarse_by_optimizer]\nadam = [0.1]", "'adam' is not among this sweep's optimizers (sgd)"),
])
def test_sweep_settings_that_cannot_mean_what_they_say(tmp_path, change, expect):
    f = tmp_path / "s.toml"
    f.write_text('datasets = ["mnist"]\narchs = ["mlp"]\nnorms = ["none"]\noptimizers = ["sgd"]\n' + change + "\n")
    with pytest.raises(ConfigError) as e:
        load_sweep(f)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_precision_is_a_sweep_setting_every_run_and_the_protocol_carry():
    """float32 unless the file says otherwise; its runs train at it and sweep.json writes it back."""
    base = {"datasets": ["mnist"], "archs": ["cnn"], "norms": ["none", "batch"], "optimizers": ["sgd"], "epochs": 1}
    assert sweep_from_dict(base).precision == "float32"
    mixed = sweep_from_dict({**base, "precision": "mixed_bfloat16"})
    cell = mixed.cells()[0]
    assert mixed.train_config(cell, 0.1, 0, "coarse").precision == "mixed_bfloat16"
    assert mixed.train_config(cell, 0.1, 0, "final").precision == "mixed_bfloat16"
    assert mixed.protocol()["precision"] == "mixed_bfloat16"
    assert mixed.to_file_dict()["precision"] == "mixed_bfloat16"
    assert sweep_from_dict(mixed.to_file_dict()) == mixed
    assert TrainConfig().precision == "float32" and TrainConfig(precision="mixed_bfloat16").to_dict()["precision"] \
        == "mixed_bfloat16"


# A valid value other than the default for every run setting: a new RunSettings field fails the test
# below until it is here, and then it is checked to reach a sweep file, `kbn train` and every run.
SETTING_EXAMPLES = {
    "epochs": 7, "batch_size": 64, "subset": 1000, "eval_every_steps": 50, "total_steps": 400,
    "test_every_epoch": False, "activation": "tanh", "depth": 2, "width": 16, "init": "gaussian:0.1",
    "eval_steps": [10, 20], "probe_preactivations": 5, "bn_statistics": "population", "bn_batches": 20,
    "precision": "mixed_bfloat16",
}


def test_a_run_setting_is_one_field_that_reaches_the_sweep_file_the_cli_and_every_run():
    """RunSettings is the one owner of a run setting: a sweep file takes it at its top level, sweep.json
    keeps it, `kbn train` has its option, and every run the sweep makes (final and search) trains with
    it (the search's own length aside)."""
    import dataclasses

    from kbn.cli import parser
    from kbn.core.config import RUN_SETTINGS, RunSettings, SweepConfig

    assert set(SETTING_EXAMPLES) == set(RUN_SETTINGS) == {f.name for f in dataclasses.fields(RunSettings)}
    assert set(RUN_SETTINGS) < {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(RUN_SETTINGS) < {f.name for f in dataclasses.fields(SweepConfig)}
    options = {a.dest for a in parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert set(RUN_SETTINGS) <= options
    base = {"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none", "batch"], "optimizers": ["sgd"],
            "epochs": 3, "seeds": [0]}
    for field, value in SETTING_EXAMPLES.items():
        extra = {"eval_every_steps": 50} if field in ("total_steps", "eval_steps") else \
            {"bn_statistics": "population"} if field == "bn_batches" else {}
        sweep = sweep_from_dict({**base, **extra, field: value})
        assert sweep_from_dict(sweep.to_file_dict()) == sweep  # sweep.json holds it
        cell = sweep.cells()[1]
        final = sweep.train_config(cell, 0.1, 0, "final")
        search = sweep.train_config(cell, 0.1, 1, "coarse")
        want = tuple(value) if isinstance(value, list) else value
        assert getattr(final, field) == want, field
        if field != "test_every_epoch":  # the search never tests every epoch
            assert getattr(search, field) == want, field
    assert sweep_from_dict(base).test_every_epoch is True  # a sweep's final runs test every epoch by default
    assert TrainConfig().test_every_epoch is False


def test_a_sweep_file_refuses_a_bad_run_setting_as_a_run_does():
    base = {"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"], "epochs": 3}
    for field, value, part in (("activation", "softplus2", "activation"), ("depth", 0, "depth: got 0"),
                               ("test_every_epoch", "yes", "give true or false"),
                               ("precision", "float16", "float32, mixed_bfloat16")):
        with pytest.raises(ConfigError) as e:
            sweep_from_dict({**base, field: value}, where="s.toml")
        assert str(e.value).startswith("s.toml: ") and part in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="epochs: missing; it is required"):
        sweep_from_dict({k: v for k, v in base.items() if k != "epochs"})
