"""The poster's protocol (Ioffe & Szegedy 2015, section 4.1, plus LayerNorm): binary inputs, Gaussian
kernels, the fixed-rate protocol, dense early evaluations, the sigmoid-input percentiles (the
mechanism of Fig. 1b-c, packed and unpacked, both backends), their pictures, and LayerNorm's
batch-size table. One file for the features of issue 13 (they cut across config, data, models,
train, tune, report and plots)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kbn.core.config import TrainConfig, load_sweep, parse_eval_steps, sweep_from_dict
from kbn.core.errors import ConfigError
from kbn.runs.runlog import FIXED_UNIT, PERCENTILES, read_metrics, read_preactivations

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- binary inputs


def test_binary_variant_is_the_base_thresholded_at_one_half_and_cached(write_cache):
    from kbn import data

    write_cache("mnist")
    grey = data.load("mnist", verbose=False)
    binary = data.load("binary_mnist", verbose=False)
    assert binary.source == "binary(generated)"
    for split in ("train", "validation", "test"):
        x, g = getattr(binary, f"x_{split}"), getattr(grey, f"x_{split}")
        assert set(np.unique(x)) <= {0.0, 1.0}
        np.testing.assert_array_equal(x, (g > 0.5).astype(np.float32))
        np.testing.assert_array_equal(getattr(binary, f"y_{split}"), getattr(grey, f"y_{split}"))
    assert 0 < binary.x_train.mean() < 1  # the generated images have lit blocks and dark noise
    assert (data.cache_dir() / "binary_mnist.npz").is_file()


def test_binary_is_a_registry_variant_of_any_base():
    from kbn.core import registry

    # a variant is one record: it applies to every base (a colour image is thresholded per channel)
    assert TrainConfig(dataset="binary_cifar10").dataset == "binary_cifar10"
    assert registry.display("dataset", "binary_fashion_mnist") == "binary Fashion-MNIST"
    with pytest.raises(ConfigError, match="binary_svhn"):
        TrainConfig(dataset="binary_svhn")


# ---------------------------------------------------------------- Gaussian kernels


@pytest.mark.slow
def test_gaussian_init_draws_every_kernel_at_the_stated_scale():
    import keras

    from kbn import models

    keras.utils.set_random_seed(0)
    m = models.build("ioffe_mlp", (28, 28, 1), init="gaussian:0.05")
    dense = [layer for layer in m.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 4  # 3 hidden + the output
    for layer in dense:
        k = np.asarray(layer.kernel)
        assert k.std() == pytest.approx(0.05, rel=0.1) and abs(k.mean()) < 0.01
        assert not np.asarray(layer.bias).any()
    first = np.asarray(dense[0].kernel).ravel()
    assert first.std() == pytest.approx(0.05, rel=0.02)  # 78,400 draws
    assert np.mean(np.abs(first) < 0.05) == pytest.approx(0.6827, abs=0.01)  # Gaussian, not uniform
    # one initializer per layer: two same-shaped kernels are different draws
    assert not np.allclose(np.asarray(dense[1].kernel), np.asarray(dense[2].kernel))
    keras.utils.set_random_seed(0)
    glorot = models.build("ioffe_mlp", (28, 28, 1))
    assert np.asarray(glorot.layers[2].kernel).std() == pytest.approx(np.sqrt(2 / (784 + 100)), rel=0.05)


@pytest.mark.slow
def test_gaussian_init_keeps_the_arms_paired_and_reaches_the_packed_model(tiny_dataset):
    from kbn.models.packed import build_packed
    from kbn.training.train import initial_model

    cfgs = [TrainConfig(arch="ioffe_mlp", norm=n, optimizer="sgd", init="gaussian:0.1", seed=s)
            for n, s in (("none", 0), ("batch", 0), ("none", 1))]
    none0, batch0, none1 = (initial_model(c, tiny_dataset) for c in cfgs)
    for name in ("dense1", "dense2", "dense3", "logits_softmax"):
        np.testing.assert_array_equal(none0.get_layer(name).kernel, batch0.get_layer(name).kernel)
    assert not np.allclose(none0.get_layer("dense1").kernel, none1.get_layer("dense1").kernel)
    packed = build_packed([none0, none1], [0.1, 0.1], "sgd")
    k = np.asarray(packed.evaluate.get_layer("dense2").kernel)
    np.testing.assert_array_equal(k[0], none0.get_layer("dense2").kernel)
    np.testing.assert_array_equal(k[1], none1.get_layer("dense2").kernel)
    assert k.std() == pytest.approx(0.1, rel=0.05)


@pytest.mark.parametrize("value", ["gaussian", "gaussian:0", "gaussian:-0.1", "gaussian:x", "he_normal", 3])
def test_a_bad_init_is_one_line(value):
    with pytest.raises(ConfigError, match=r"^init: got .*; give glorot_uniform or gaussian:<stddev>"):
        TrainConfig(init=value)


# ---------------------------------------------------------------- dense early evaluations


def test_log_spaced_steps_hit_the_decades():
    steps = parse_eval_steps("eval_steps", "log:100:10000:13")
    assert len(steps) == 13 and steps[0] == 100 and steps[-1] == 10000 and 1000 in steps
    ratios = np.diff(np.log10(steps))
    assert ratios == pytest.approx(np.full(12, 1 / 6), abs=0.03)  # 6 per decade, rounded to 2 digits
    assert parse_eval_steps("eval_steps", [3, 10]) == (3, 10)


@pytest.mark.parametrize("value,msg", [
    ("log:100:10", "log:FIRST:LAST:N"), ("lin:1:10:3", "log:FIRST:LAST:N"), ("log:0:10:3", "log:FIRST:LAST:N"),
    ([5, 3], "must increase strictly"), ([0, 3], r"eval_steps\[0\]: got 0"), ([], "non-empty list"),
])
def test_bad_eval_steps_are_one_line(value, msg):
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(eval_every_steps=10, eval_steps=value)


def test_eval_steps_need_the_regular_evaluations():
    with pytest.raises(ConfigError, match="eval_steps: only with eval_every_steps"):
        TrainConfig(eval_steps=[10])


def test_a_run_evaluates_at_the_listed_steps_and_every_k(tiny_dataset, tmp_path):
    from kbn.training.train import train

    cfg = TrainConfig(arch="ioffe_mlp", optimizer="sgd", lr=0.5, batch_size=32, eval_every_steps=8, total_steps=20,
                      eval_steps=[1, 3, 12, 25])
    res = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    rows = read_metrics(res.folder)
    assert [r["step"] for r in rows] == [1, 3, 8, 12, 16, 20]  # 25 is past the end
    assert all(r["test_accuracy"] is not None for r in rows)
    config = json.loads((res.folder / "config.json").read_text())
    assert config["schedule"]["eval_at"] == [1, 3, 8, 12, 16, 20] and config["schedule"]["periods"] == 6
    assert config["settings"]["eval_steps"] == [1, 3, 12, 25]
    assert res.metrics["steps"] == 20


def test_a_diverged_run_is_extended_at_chance_over_its_own_evaluation_steps():
    from kbn.report.results import _run_records

    config = {"settings": {"dataset": "mnist", "arch": "ioffe_mlp", "norm": "none", "optimizer": "sgd", "seed": 0,
                           "lr": 10.0, "eval_every_steps": 100, "epochs": 1},
              "schedule": {"total_steps": 300, "eval_at": [10, 30, 100, 200, 300]}}
    rows = [{"epoch": 0.1, "step": 10, "val_accuracy": 0.3}, {"epoch": 0.3, "step": 30, "loss": float("nan")}]
    records = _run_records(config, "diverged", rows)
    assert [r["step"] for r in records] == [10, 30, 100, 200, 300]
    assert [r["val_accuracy"] for r in records[1:]] == [0.1] * 4


def test_poster_table_shows_the_regular_grid_and_the_early_decades():
    from kbn.report.measures import poster_steps

    dense = sorted(set(parse_eval_steps("x", "log:100:10000:13")) | set(range(5000, 50001, 5000)))
    shown, every = poster_steps(dense)
    assert every == 5000 and shown == [100, 1000] + list(range(5000, 50001, 5000))
    assert poster_steps([5000, 10000, 15000]) == ([5000, 10000, 15000], 5000)


# ---------------------------------------------------------------- the sigmoid-input percentiles


def preactivations_by_hand(model_path, x, norm: str) -> list[np.ndarray]:
    """Each hidden layer's pre-activation of a saved ioffe_mlp, computed with numpy from its weights:
    Dense, then the norm (batch: moving statistics; layer: per example), the input to the sigmoid."""
    import keras

    m = keras.models.load_model(model_path, compile=False)
    h = x.reshape(len(x), -1).astype(np.float64)
    out = []
    for i in (1, 2, 3):
        w, b = (np.asarray(v, np.float64) for v in m.get_layer(f"dense{i}").get_weights())
        z = h @ w + b
        if norm == "batch":
            bn = m.get_layer(f"dense{i}_batchnorm")
            gamma, beta, mean, var = (np.asarray(v, np.float64) for v in bn.get_weights())
            z = (z - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
        elif norm == "layer":
            ln = m.get_layer(f"dense{i}_layernorm")
            gamma, beta = (np.asarray(v, np.float64) for v in ln.get_weights())
            z = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + ln.epsilon) * gamma + beta
        out.append(z)
        h = 1 / (1 + np.exp(-z))
    return out


def check_logged_percentiles(folder: Path, x_val: np.ndarray, norm: str, n: int) -> int:
    """The last evaluation's logged percentiles equal numpy's on the hand-computed pre-activations of
    the same validation images; returns how many numbers were compared."""
    rows = read_preactivations(folder)
    last = max(r["step"] for r in rows)
    logged = {(r["layer"], r["scope"]): [r[f"p{q}"] for q in PERCENTILES] for r in rows if r["step"] == last}
    compared = 0
    for i, z in enumerate(preactivations_by_hand(folder / "model.keras", x_val[:n], norm), 1):
        for scope, v in (("unit", z[:, FIXED_UNIT]), ("all", z)):
            want = np.percentile(v.ravel(), PERCENTILES)
            np.testing.assert_allclose(logged[(f"dense{i}_act", scope)], want, rtol=1e-4, atol=1e-4)
            compared += 3
    return compared


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.slow
def test_logged_percentiles_equal_those_of_the_models_preactivations(tiny_dataset, tmp_path, norm):
    from kbn.training.train import train

    cfg = TrainConfig(arch="ioffe_mlp", norm=norm, optimizer="sgd", lr=0.5, batch_size=32, eval_every_steps=10,
                      total_steps=30, eval_steps=[2], init="gaussian:0.1", probe_preactivations=100)
    res = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    assert check_logged_percentiles(res.folder, tiny_dataset.x_validation, norm, 100) == 18
    rows = read_preactivations(res.folder)
    assert sorted({r["step"] for r in rows}) == [2, 10, 20, 30]
    assert len(rows) == 4 * 3 * 2  # evaluations x hidden layers x (unit, all)
    assert all(r["p15"] <= r["p50"] <= r["p85"] for r in rows)
    # TensorBoard: the same numbers as scalars, and each hidden layer's values as a histogram
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(res.folder), size_guidance={"histograms": 0, "scalars": 0})
    ea.Reload()
    p50 = [(e.step, e.value) for e in ea.Scalars("preactivation/step_dense3_act_all_p50")]
    assert p50 == [(r["step"], pytest.approx(r["p50"], rel=1e-6)) for r in rows
                   if r["layer"] == "dense3_act" and r["scope"] == "all"]
    assert {t for t in ea.Tags()["histograms"]} == {f"preactivation/step_dense{i}_act" for i in (1, 2, 3)}
    h = ea.Histograms("preactivation/step_dense1_act")
    assert [e.step for e in h] == [2, 10, 20, 30] and h[-1].histogram_value.num == 100 * 100


@pytest.mark.slow
def test_packed_trials_log_their_own_percentiles(tiny_dataset, tmp_path):
    from kbn.training.train import train_many

    base = dict(arch="ioffe_mlp", norm="batch", optimizer="sgd", batch_size=32, eval_every_steps=8, total_steps=16,
                init="gaussian:0.1", probe_preactivations=64)
    cfgs = [TrainConfig(lr=0.5, seed=0, **base), TrainConfig(lr=2.0, seed=1, **base)]
    results = train_many(cfgs, tmp_path, verbose=False, dataset=tiny_dataset)
    assert json.loads((results[0].folder / "config.json").read_text())["schedule"]["packed_with"] == 2
    for r in results:
        assert check_logged_percentiles(r.folder, tiny_dataset.x_validation, "batch", 64) == 18
    a, b = (read_preactivations(r.folder) for r in results)
    assert [r["p50"] for r in a] != [r["p50"] for r in b]  # each trial its own, not one trial's twice


@pytest.mark.slow
def test_percentiles_on_the_tensorflow_backend(tmp_path, tensorflow_child):
    """A fresh process: Keras picks its backend at import."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest, test_poster\n"
        "from pathlib import Path\n"
        "from kbn.core.config import TrainConfig; from kbn.training.train import train, train_many\n"
        "ds = conftest.generated_dataset('mnist', (256, 64, 64))\n"
        "kw = dict(arch='ioffe_mlp', norm='layer', optimizer='sgd', batch_size=32, eval_every_steps=8, total_steps=16,"
        " probe_preactivations=50)\n"
        "one = train(TrainConfig(lr=0.5, **kw), Path(sys.argv[1]) / 'one', verbose=False, dataset=ds)\n"
        "two = train_many([TrainConfig(lr=0.5, **kw), TrainConfig(lr=1.0, **kw)], Path(sys.argv[1]) / 'two',"
        " verbose=False, dataset=ds)\n"
        "print(sum(test_poster.check_logged_percentiles(r.folder, ds.x_validation, 'layer', 50) for r in [one] + two))\n"
    )
    assert tensorflow_child(code, tmp_path).split()[-1] == "54"
    config = json.loads(next((tmp_path / "one").iterdir()).joinpath("config.json").read_text())
    assert config["backend"] == "tensorflow"


def test_too_many_probe_images_is_one_line(tiny_dataset, tmp_path):
    from kbn.training.train import train

    with pytest.raises(ConfigError, match="probe_preactivations: 500 is more than the 128 validation images"):
        train(TrainConfig(probe_preactivations=500), tmp_path, verbose=False, dataset=tiny_dataset)


# ---------------------------------------------------------------- the mechanism picture


@pytest.mark.slow
def test_the_mechanism_figure_draws_the_logged_percentiles(tiny_dataset, tmp_path):
    from kbn.report import plots
    from kbn.training.train import train

    for norm in ("none", "batch"):
        for seed in (0, 1):
            cfg = TrainConfig(arch="ioffe_mlp", norm=norm, optimizer="sgd", lr=0.5, batch_size=32, seed=seed,
                              eval_every_steps=10, total_steps=20, eval_steps=[1, 4], probe_preactivations=40)
            train(cfg, tmp_path / "runs", verbose=False, dataset=tiny_dataset)
    table = plots.preactivation_table(tmp_path)
    assert len(table) == 2 * 2 * 4 * 3 * 2  # norms x seeds x evaluations x layers x scopes
    fig = plots.preactivation_figure(table)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["none norm: unit 0", "none norm: all units",
                                               "batch norm: unit 0", "batch norm: all units"]
    for ax, (norm, scope) in zip(axes, [("none", "unit"), ("none", "all"), ("batch", "unit"), ("batch", "all")]):
        folder = next((tmp_path / "runs").glob(f"*-{norm}-sgd-*-s0"))  # the lowest seed
        rows = [r for r in read_preactivations(folder) if r["layer"] == "dense3_act" and r["scope"] == scope]
        lines = ax.get_lines()
        assert [list(line.get_xdata()) for line in lines] == [[1, 4, 10, 20]] * 3
        for line, q in zip(lines, PERCENTILES):
            assert list(line.get_ydata()) == pytest.approx([r[f"p{q}"] for r in rows])
    assert axes[0].get_ylim() == axes[3].get_ylim()  # one scale: the spreads compare
    (tmp_path / "pictures").mkdir()
    paths = plots.preactivations(tmp_path, tmp_path / "pictures")
    assert [p.name for p in paths] == ["preactivations_fashion_mnist_ioffe_mlp_sgd.png"]
    assert paths[0].stat().st_size > 10_000


# ---------------------------------------------------------------- the fixed-rate protocol


FIXED = {"name": "fixed", "datasets": ["binary_mnist"], "archs": ["ioffe_mlp"], "norms": ["none", "batch"],
         "optimizers": ["sgd"], "lr": 0.5, "epochs": 1, "seeds": [0, 1], "batch_size": 32, "eval_every_steps": 4,
         "total_steps": 8, "eval_steps": [1, 2], "init": "gaussian:0.1", "probe_preactivations": 20}


def test_a_fixed_rate_with_a_search_is_one_line():
    raw = {"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"], "epochs": 1, "lr": 0.1,
           "search": {"coarse": [0.1, 1.0]}}
    with pytest.raises(ConfigError, match=r"^sweep: lr: a fixed rate \(0.1\) trains every arm at it with no search; "
                       r"remove \[search\]"):
        sweep_from_dict(raw)
    with pytest.raises(ConfigError, match="^sweep: lr: got 0; it must be a positive number"):
        sweep_from_dict({**raw, "lr": 0, "search": {}})


@pytest.mark.slow
def test_fixed_rate_sweep_trains_every_arm_at_that_rate_and_says_so(tmp_path, write_cache):
    from kbn import report
    from kbn.sweep.folder import load_folder_sweep
    from kbn.sweep.plan import planned_trials
    from kbn.sweep.status import folder_progress
    from kbn.sweep.runner import run_sweep

    write_cache("mnist")
    sweep = sweep_from_dict(FIXED)
    assert planned_trials(sweep) == 4 and sweep.coarse_grid("sgd") == ()
    out = tmp_path / "out"
    assert run_sweep(sweep, out, log=lambda *_: None) == 0
    assert not (out / "search").exists()
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == [f"binary_mnist-ioffe_mlp-{n}-sgd-lr0.5-s{s}" for n in ("batch", "none") for s in (0, 1)]
    config = json.loads((out / "runs" / runs[0] / "config.json").read_text())
    assert config["protocol"]["lr_protocol"] == "fixed" and config["protocol"]["lr"] == 0.5
    assert config["settings"]["init"] == "gaussian:0.1" and config["data"]["source"] == "binary(generated)"
    assert [r["step"] for r in read_metrics(out / "runs" / runs[0])] == [1, 2, 4, 8]
    assert read_preactivations(out / "runs" / runs[0])
    assert load_folder_sweep(out) == sweep  # sweep.json reads back (no [search] to refuse)
    state = folder_progress(out)
    assert all(p["chosen"] == 0.5 and p["final"] == [2, 2] for p in state.progress.values())
    scan = report.scan_runs(out)
    line = report.protocol_line(scan.protocol)
    assert line == ("Protocol: fixed learning rate 0.5 for every arm (no search); final runs: 8 steps, seeds 0, 1; "
                    "precision: float32; BN statistics: Keras moving averages (momentum 0.99).")
    text = report.render(report.build_tables(report.long_from_runs(scan.runs), protocol=scan.protocol))
    assert "fixed learning rate 0.5" in text and "Convergence — binary MNIST + Ioffe MLP" in text


def test_the_shipped_poster_sweeps():
    fixed, tuned = load_sweep(REPO / "sweeps/poster-fixed-lr.toml"), load_sweep(REPO / "sweeps/poster-norms.toml")
    for s in (fixed, tuned):
        assert s.batch_size == 60 and s.total_steps == 50000 and s.archs == ("ioffe_mlp",) and s.optimizers == ("sgd",)
        assert s.datasets == ("binary_fashion_mnist",) and s.init == "gaussian:0.1"
        assert s.norms == ("none", "batch", "layer")
        assert s.probe_preactivations == 1000 and 1000 in s.eval_steps and 100 in s.eval_steps
        assert (s.bn_statistics, s.bn_batches) == ("population", 100)  # the poster's own inference rule
    assert fixed.lr == 1.0 and fixed.protocol()["lr_protocol"] == "fixed" and tuned.protocol()["lr_protocol"] == "tuned"
    small, large = load_sweep(REPO / "sweeps/ln-batch-small.toml"), load_sweep(REPO / "sweeps/ln-batch-large.toml")
    assert (small.batch_size, large.batch_size) == (4, 128)
    differ = {k for k, v in small.to_dict().items() if large.to_dict()[k] != v}
    assert differ == {"name", "batch_size"}


# ---------------------------------------------------------------- LayerNorm's batch-size claim


def _runs(batch: int, acc: dict) -> pd.DataFrame:
    """A run table: one test evaluation at epoch 10 per (norm, seed)."""
    rows = [{"dataset": "fashion_mnist", "arch": "ioffe_mlp", "norm": n, "optimizer": "sgd", "seed": s, "lr": 0.1,
             "epoch": 10, "step": None, "loss": 0.3, "accuracy": 0.9, "val_loss": 0.3, "val_accuracy": v,
             "test_loss": 0.3, "test_accuracy": v, "wall_time": 1.0, "status": "finished", "batch_size": batch}
            for n, vs in acc.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_batch_size_table_gives_each_norms_drop_paired_by_seed():
    from scipy import stats

    from kbn import report

    large = {"none": [0.86, 0.87, 0.85], "batch": [0.88, 0.885, 0.87], "layer": [0.875, 0.88, 0.87]}
    small = {"none": [0.85, 0.86, 0.855], "batch": [0.80, 0.78, 0.81], "layer": [0.87, 0.875, 0.862]}
    [t] = report.batch_size_tables(_runs(4, small), _runs(128, large), where=("small", "large"))
    assert t.headers == ["norm", "batch 128", "batch 4", "drop (points)"]
    rows = {r[0]: r for r in t.rows}
    assert set(rows) == {"none", "batch", "layer", "layer − batch", "none − batch"}
    assert rows["batch"][1] == f"{100 * np.mean(large['batch']):.2f} ± {100 * np.std(large['batch'], ddof=1):.2f}"
    drops = {n: 100 * (np.array(large[n]) - np.array(small[n])) for n in large}
    for n, d in drops.items():
        stat = rows[n][3]
        half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
        assert stat.method == "paired t" and stat.value == pytest.approx(d.mean())
        assert (stat.low, stat.high) == pytest.approx((d.mean() - half, d.mean() + half))
    diff = drops["layer"] - drops["batch"]
    c = rows["layer − batch"][3]
    assert c.value == pytest.approx(diff.mean()) and c.high < 0  # layer norm loses less at batch 4
    text = report.render([t])
    assert "Batch size — Fashion-MNIST + Ioffe MLP, SGD" in text and "paired by seed" in text
    csv_rows = [r for r in t.records if r["quantity"] == "drop" and r["norm"] == "layer"]
    assert csv_rows[0]["value"] == pytest.approx(round(drops["layer"].mean(), 6))


def test_batch_size_table_needs_two_batch_sizes():
    from kbn import report

    runs = _runs(60, {"none": [0.8, 0.81]})
    with pytest.raises(report.ReportError, match="both train at batch 60"):
        report.batch_size_tables(runs, runs, where=("a", "b"))
    mixed = pd.concat([runs, _runs(4, {"batch": [0.7, 0.71]})])
    with pytest.raises(report.ReportError, match=r"^b: its runs train at batch sizes \[4, 60\]"):
        report.batch_size_tables(runs, mixed, where=("a", "b"))
