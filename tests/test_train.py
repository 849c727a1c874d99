import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kbn.runs.runlog import METRIC_COLUMNS, read_metrics
from kbn.core.config import TrainConfig
from kbn.core.errors import ConfigError
from kbn.training.train import IndexStream, plan_schedule, train


def tb_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(folder))
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def test_one_run_is_fully_logged(tiny_dataset, tmp_path):
    cfg = TrainConfig(arch="mlp", norm="batch", optimizer="adam", lr=3e-3, epochs=3, batch_size=32)
    res = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    assert res.status == "finished" and res.folder == tmp_path / cfg.run_name()
    rows = read_metrics(res.folder)
    with open(res.folder / "metrics.csv") as f:
        assert tuple(next(csv.reader(f))) == METRIC_COLUMNS
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["step"] for r in rows] == [16, 32, 48]  # 512 examples / batch 32
    assert all(r["val_accuracy"] is not None and r["lr"] == pytest.approx(3e-3) for r in rows)
    assert [r["test_accuracy"] is not None for r in rows] == [False, False, True]
    assert rows[-1]["val_accuracy"] > 0.5  # the generated classes are learnable
    config = json.loads((res.folder / "config.json").read_text())
    assert config["settings"]["norm"] == "batch" and config["backend"] in ("jax", "tensorflow")
    assert config["versions"]["keras"].startswith("3.")
    assert config["data"]["source"] == "generated" and config["model"]["params"] == 100_910
    result = json.loads((res.folder / "result.json").read_text())
    assert result["metrics"]["test_accuracy"] == pytest.approx(rows[-1]["test_accuracy"])
    tb = tb_scalars(res.folder)  # one TensorBoard run: the run folder itself
    assert [s for s, _ in tb["train/epoch_accuracy"]] == [1, 2, 3]
    assert tb["train/epoch_accuracy"][-1][1] == pytest.approx(rows[-1]["accuracy"], rel=1e-6)
    assert "train/epoch_learning_rate" in tb
    assert [v for _, v in tb["validation/epoch_accuracy"]] == pytest.approx([r["val_accuracy"] for r in rows], rel=1e-6)
    assert len(tb["test/epoch_accuracy"]) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    ea = EventAccumulator(str(res.folder))
    ea.Reload()
    start = metadata.parse_session_start_info_plugin_data(ea.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG])
    assert start.group_name == cfg.run_name()  # its path under logdir: one HParams row per run
    assert start.hparams["seed"].string_value == "0"  # HParams prints a number seed as 0.0000


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_dataset, tmp_path):
    cfg = TrainConfig(norm="batch", optimizer="sgdm", lr=0.05, epochs=2, batch_size=64, seed=7)
    a = read_metrics(train(cfg, tmp_path / "a", verbose=False, dataset=tiny_dataset).folder)
    b = read_metrics(train(cfg, tmp_path / "b", verbose=False, dataset=tiny_dataset).folder)
    c = read_metrics(train(dataclasses.replace(cfg, seed=8), tmp_path / "c", verbose=False, dataset=tiny_dataset).folder)
    timing = ("wall_time", "train_time", "compile_time")  # seconds: no two runs share them
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_eval_every_steps_gives_the_posters_curve(tiny_dataset, tmp_path):
    cfg = TrainConfig(arch="ioffe_mlp", norm="layer", optimizer="sgd", lr=0.5, batch_size=60,
                      eval_every_steps=5, total_steps=23)
    rows = read_metrics(train(cfg, tmp_path, verbose=False, dataset=tiny_dataset).folder)
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 23]
    assert all(r["test_accuracy"] is not None for r in rows)
    assert rows[0]["epoch"] == pytest.approx(5 * 60 / 512, abs=1e-3)
    tb = tb_scalars(tmp_path / cfg.run_name())
    assert [s for s, _ in tb["test/step_accuracy"]] == [5, 10, 15, 20, 23]  # the step is an optimizer step
    assert not any(t.startswith("epoch") or "/epoch_" in t for t in tb)


def test_nan_loss_ends_the_run_marked_diverged(tiny_dataset, tmp_path):
    # Infinite inputs make the very first loss NaN (a huge learning rate may not: Keras clips the loss).
    blown = dataclasses.replace(tiny_dataset, x_train=np.full_like(tiny_dataset.x_train, np.inf))
    cfg = TrainConfig(optimizer="sgd", lr=1.0, epochs=4, batch_size=64)
    res = train(cfg, tmp_path, verbose=False, dataset=blown)
    assert res.status == "diverged"
    rows = read_metrics(res.folder)
    assert len(rows) == 1 and np.isnan(rows[0]["loss"]) and rows[0]["val_accuracy"] is None
    result = json.loads((res.folder / "result.json").read_text())
    assert result["status"] == "diverged" and result["metrics"]["val_accuracy"] == pytest.approx(0.1)


def test_finished_runs_are_not_redone_and_unfinished_ones_are(tiny_dataset, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=128)
    first = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    stamp = (first.folder / "result.json").stat().st_mtime_ns
    again = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    assert again.skipped and (first.folder / "result.json").stat().st_mtime_ns == stamp
    (first.folder / "result.json").unlink()  # as if killed before the end
    (first.folder / "stale").write_text("x")
    redone = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    assert not redone.skipped and not (first.folder / "stale").exists()
    assert redone.metrics["test_accuracy"] == pytest.approx(first.metrics["test_accuracy"])


def test_index_stream_covers_every_example_each_epoch():
    s = IndexStream(10, seed=0)
    chunks = np.concatenate([s.take(3) for _ in range(10)])
    assert sorted(chunks[:10]) == list(range(10)) and sorted(chunks[10:20]) == list(range(10))


def _train_in_a_fresh_process(code: str, backend: str, tmp_path):
    """Run `code` (it trains one run into sys.argv[1] and prints its status and validation accuracy)
    on `backend`; (status, accuracy, the run folder, its config.json)."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    status, val = out.stdout.split()
    run = next(tmp_path.iterdir())
    return status, val, run, json.loads((run / "config.json").read_text())


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
@pytest.mark.slow
def test_both_backends_train_and_log(backend, tmp_path):
    """A fresh process per backend (Keras picks it at import)."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest, numpy as np\n"
        "from kbn.data.loading import Dataset; from kbn.core.config import TrainConfig; from kbn.training.train import train\n"
        "p = {}\n"
        "for s, n, seed in (('train', 256, 0), ('validation', 64, 1), ('test', 64, 2)):\n"
        "    x, y = conftest.make_images(n, seed); p['x_'+s] = x.astype('float32')/255; p['y_'+s] = y.astype('int32')\n"
        "r = train(TrainConfig(norm='batch', epochs=3, batch_size=32), sys.argv[1], verbose=False,"
        " dataset=Dataset(name='mnist', source='generated', **p))\n"
        "print(r.status, r.metrics['val_accuracy'])\n"
    )
    status, val, run, config = _train_in_a_fresh_process(code, backend, tmp_path)
    assert status == "finished" and float(val) > 0.3
    assert config["backend"] == backend
    assert tb_scalars(run)["validation/epoch_accuracy"]
    # compilation apart: timed on JAX's loops, estimated from fit's first calls on TensorFlow
    assert config["timing"]["compile_time"].startswith("explicit" if backend == "jax" else "first calls")
    rows = read_metrics(run)
    last = rows[-1]
    assert last["compile_time"] > 0 and last["train_time"] > 0
    assert last["train_time"] + last["compile_time"] <= last["wall_time"] + 1e-3
    # the first epoch compiled: its row says so, and no later row takes training seconds back (TensorFlow's
    # estimate, known only once a warm call is seen, revises the rows written before it)
    assert rows[0]["compile_time"] > 0
    for a, b in zip(rows, rows[1:]):
        assert b["train_time"] >= a["train_time"] and b["compile_time"] >= a["compile_time"], (a, b)


def test_a_finished_run_with_other_settings_is_refused_not_returned(tiny_dataset, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=128)
    train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    # the folder name leaves out epochs and batch size: the same folder, other settings
    longer = dataclasses.replace(cfg, epochs=2, batch_size=64)
    with pytest.raises(ConfigError) as e:
        train(longer, tmp_path, verbose=False, dataset=tiny_dataset)
    msg = str(e.value)
    assert "\n" not in msg and cfg.run_name() in msg
    assert "epochs 1 -> 2" in msg and "batch_size 128 -> 64" in msg
    assert "--overwrite" in msg and "--logdir" in msg
    redone = train(longer, tmp_path, overwrite=True, verbose=False, dataset=tiny_dataset)
    assert not redone.skipped and redone.metrics["epochs_completed"] == 2
    # where the data was read from is not what trained: the run is reused
    again = train(dataclasses.replace(longer, data_dir=str(tmp_path)), tmp_path, verbose=False, dataset=tiny_dataset)
    assert again.skipped


def test_a_damaged_finished_run_is_redone_and_said_so(tiny_dataset, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=128)
    first = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    metrics = first.folder / "metrics.csv"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:2]))  # one row of two
    lines = []
    redone = train(cfg, tmp_path, dataset=tiny_dataset, log=lines.append)
    assert not redone.skipped and len(read_metrics(redone.folder)) == 2
    assert f"kbn: {first.folder} is damaged (metrics.csv holds 1 complete row(s) of 2); training it again" in lines


def test_a_diverged_runs_result_is_strict_json_and_reported(tiny_dataset, tmp_path):
    from kbn.report.results import run_table

    blown = dataclasses.replace(tiny_dataset, x_train=np.full_like(tiny_dataset.x_train, np.inf))
    res = train(TrainConfig(optimizer="sgd", lr=1.0, epochs=3, batch_size=64), tmp_path, verbose=False, dataset=blown)
    assert res.status == "diverged"
    for name in ("result.json", "config.json"):
        text = (res.folder / name).read_text()
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{name} holds the non-standard constant {c}"))
    assert json.loads((res.folder / "result.json").read_text())["metrics"]["loss"] is None
    runs = run_table(tmp_path)
    assert list(runs["epoch"]) == [1, 2, 3] and set(runs["status"]) == {"diverged"}
    assert list(runs["val_accuracy"]) == pytest.approx([0.1] * 3)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("norm", ["batch", "layer", "group", "rms"])
def test_arms_with_and_without_a_norm_start_from_the_same_weights(tiny_dataset, arch, norm):
    """Paired arms (common random numbers): at one seed, every layer both networks have starts alike."""
    from kbn.training.train import initial_model

    def weights(norm, seed):
        m = initial_model(TrainConfig(arch=arch, norm=norm, seed=seed), tiny_dataset)
        return {layer.name: layer.get_weights() for layer in m.layers
                if layer.get_weights() and "norm" not in layer.name}

    none, normed, other = weights("none", 3), weights(norm, 3), weights("none", 4)
    assert set(none) == set(normed) and len(none) >= 4
    for name in none:
        for a, b, c in zip(none[name], normed[name], other[name]):
            assert np.array_equal(a, b), name
    first = next(iter(none))
    assert not np.array_equal(none[first][0], other[first][0])  # another seed, other weights


def _reloaded_test_accuracy(folder, ds):
    import keras

    model = keras.saving.load_model(folder / "model.keras")
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # saved uncompiled
    return model.evaluate(ds.x_test, ds.y_test, batch_size=1000, verbose=0, return_dict=True)["accuracy"]


def test_a_run_keeps_its_trained_network_as_model_keras(tiny_dataset, tmp_path):
    """kbn train always saves model.keras; it loads with keras.saving.load_model and gives the logged
    test accuracy."""
    cfg = TrainConfig(arch="mlp", norm="batch", optimizer="adam", lr=3e-3, epochs=2, batch_size=32)
    res = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    assert _reloaded_test_accuracy(res.folder, tiny_dataset) == pytest.approx(res.metrics["test_accuracy"], abs=1e-6)
    assert not list(res.folder.glob(".*tmp*"))  # written atomically: no leftovers


@pytest.mark.slow
def test_packed_runs_each_keep_their_own_network_and_search_runs_none(tiny_dataset, tmp_path):
    from kbn.training.train import train_many

    cfgs = [TrainConfig(arch="mlp", norm="batch", optimizer="sgdm", lr=lr, seed=s, epochs=2, batch_size=32)
            for lr, s in ((0.01, 0), (0.05, 1), (1e30, 2))]
    ok1, ok2, blown = train_many(cfgs, tmp_path / "final", verbose=False, dataset=tiny_dataset, save_model=True)
    assert blown.status == "diverged" and not (blown.folder / "model.keras").exists()  # no finite weights to keep
    for res in (ok1, ok2):  # one near-tie of the 128 test examples may flip (einsum vs matmul rounding)
        got = _reloaded_test_accuracy(res.folder, tiny_dataset)
        assert got == pytest.approx(res.metrics["test_accuracy"], abs=1 / 128 + 1e-6)
    assert ok1.metrics["test_accuracy"] != ok2.metrics["test_accuracy"] or ok1.metrics["loss"] != ok2.metrics["loss"]
    search = train_many(cfgs[:2], tmp_path / "search", verbose=False, dataset=tiny_dataset, save_model=False)
    assert not any((r.folder / "model.keras").exists() for r in search)


# ---------------------------------------------------------------- the schedule

@pytest.mark.parametrize("settings, n, expected", [
    ({"epochs": 3, "batch_size": 100}, 1050, (11, 33, 3, 11, None)),
    ({"eval_every_steps": 50, "total_steps": 200, "eval_steps": "log:10:100:4"}, 1000,
     (8, 200, 7, 4, [10, 22, 46, 50, 100, 150, 200])),
])
def test_schedule_periods_and_evaluation_points(settings, n, expected):
    s = plan_schedule(TrainConfig(**settings), n)
    assert (s.steps_per_epoch, s.total_steps, s.periods, s.period_steps, s.eval_at) == expected
    step = 0
    for p in range(s.periods):
        step += s.steps_of(p, step)
    assert step == s.total_steps


def test_fits_path_times_its_compilation_apart_too(tmp_path, tiny_dataset, monkeypatch):
    """Keras's fit and evaluate (KBN_JAX_LOOP=off) compile inside their calls: JAX's own compile
    events give the run's compile_time (config.json says so), and its training seconds exclude it."""
    monkeypatch.setenv("KBN_JAX_LOOP", "off")
    cfg = TrainConfig(norm="batch", optimizer="sgd", lr=0.1, batch_size=16, eval_every_steps=20, total_steps=60,
                      eval_steps=[3, 7, 12, 15])
    run = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset).folder
    assert json.loads((run / "config.json").read_text())["timing"]["compile_time"].startswith("jax events")
    rows = read_metrics(run)
    assert rows[0]["compile_time"] > 0
    for r in rows:
        assert r["train_time"] > 0 and r["train_time"] + r["compile_time"] <= r["wall_time"] + 1e-3


# ---------------------------------------------------------------- precision (mixed bfloat16)


@pytest.mark.slow
def test_a_mixed_precision_run_trains_in_bfloat16_and_keeps_float32_where_it_must(tiny_dataset, tmp_path):
    """The policy config.json states is the one the network computed in; variables (BN's moving
    statistics too), the softmax and the loss stay float32; the process's policy is float32 after."""
    import keras

    from kbn import models

    cfg = TrainConfig(arch="mlp", norm="batch", optimizer="adam", lr=3e-3, epochs=3, batch_size=32,
                      precision="mixed_bfloat16")
    res = train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    assert keras.config.dtype_policy().name == "float32"  # the next run starts where a plain one does
    rows = read_metrics(res.folder)
    assert res.status == "finished" and rows[-1]["val_accuracy"] > 0.5  # chance: 0.1
    assert rows[-1]["accuracy"] > rows[0]["accuracy"] and rows[-1]["loss"] < rows[0]["loss"]
    config = json.loads((res.folder / "config.json").read_text())
    assert config["settings"]["precision"] == "mixed_bfloat16"
    assert config["precision"] == {"policy": "mixed_bfloat16", "compute_dtypes": ["bfloat16"],
                                   "variable_dtypes": ["float32"], "output_dtype": "float32"}
    model = keras.models.load_model(res.folder / "model.keras")  # the trained network, as it trained
    assert model.get_layer("dense1").compute_dtype == "bfloat16" and model.get_layer("dense1").kernel.dtype == "float32"
    bn = model.get_layer("dense1_batchnorm")
    assert bn.moving_mean.dtype == bn.moving_variance.dtype == "float32"
    assert not np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), 0)  # the statistics moved, in float32
    x, y = tiny_dataset.x_validation[:64], tiny_dataset.y_validation[:64]
    probs = model(x, training=False)
    assert str(probs.dtype) == "float32"
    assert keras.ops.convert_to_numpy(keras.ops.sum(probs, axis=1)) == pytest.approx(np.ones(64), abs=1e-6)
    loss = keras.losses.SparseCategoricalCrossentropy()(y, probs)
    assert str(loss.dtype) == "float32"
    # the float32 run of the same seed: a float32 network, and not the same numbers
    plain = train(dataclasses.replace(cfg, precision="float32"), tmp_path / "f32", verbose=False, dataset=tiny_dataset)
    f32 = json.loads((plain.folder / "config.json").read_text())["precision"]
    assert f32 == {"policy": "float32", "compute_dtypes": ["float32"], "variable_dtypes": ["float32"],
                   "output_dtype": "float32"}
    assert read_metrics(plain.folder)[-1]["loss"] != rows[-1]["loss"]
    assert models.build("cnn", (28, 28, 1), norm="batch").get_layer("conv1").compute_dtype == "float32"


def test_a_finished_run_at_another_precision_is_refused_not_returned(tiny_dataset, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=128)
    train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    with pytest.raises(ConfigError) as e:
        train(dataclasses.replace(cfg, precision="mixed_bfloat16"), tmp_path, verbose=False, dataset=tiny_dataset)
    assert "precision float32 -> mixed_bfloat16" in str(e.value) and "\n" not in str(e.value)


def test_packed_trials_keep_each_layers_precision(tiny_dataset):
    """Packed, the copies compute as the single layers did: bfloat16 hidden layers (conv and dense),
    float32 output and variables."""
    import keras

    from kbn.models.packed import build_packed
    from kbn.training.train import initial_model

    cfgs = [TrainConfig(arch="cnn", norm="batch", optimizer="sgdm", lr=lr, epochs=1, batch_size=64, seed=s,
                        precision="mixed_bfloat16") for lr, s in ((0.05, 0), (0.02, 1))]
    singles = [initial_model(c, tiny_dataset) for c in cfgs]
    packed = build_packed(singles, [c.lr for c in cfgs], "sgdm", train_examples=tiny_dataset.x_train)
    for m in (packed.train, packed.evaluate):
        assert m.get_layer("conv1").compute_dtype == m.get_layer("dense1").compute_dtype == "bfloat16"
        assert m.get_layer("conv1_batchnorm").compute_dtype == "bfloat16"  # Keras normalises in float32 inside
        assert m.get_layer("logits_softmax").compute_dtype == "float32"
        assert {str(v.dtype) for v in m.weights} == {"float32"}
        assert all(str(o.dtype) == "float32" for o in m.outputs)
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_packed_mixed_precision_trials_train_and_save_the_mixed_network(tiny_dataset, tmp_path):
    import keras

    from kbn.training.train import train_many

    cfgs = [TrainConfig(arch="mlp", norm="batch", optimizer="sgdm", lr=lr, epochs=2, batch_size=32, seed=s,
                        precision="mixed_bfloat16") for lr, s in ((0.05, 0), (0.02, 1))]
    results = train_many(cfgs, tmp_path, verbose=False, dataset=tiny_dataset)
    assert [r.status for r in results] == ["finished", "finished"]
    assert all(r.metrics["val_accuracy"] > 0.5 for r in results)  # chance: 0.1
    config = json.loads((results[0].folder / "config.json").read_text())
    assert config["schedule"]["packed_with"] == 2 and config["precision"]["compute_dtypes"] == ["bfloat16"]
    saved = keras.models.load_model(results[1].folder / "model.keras")
    assert saved.get_layer("dense2").compute_dtype == "bfloat16" and saved.get_layer("dense2").kernel.dtype == "float32"


def test_precision_refuses_a_network_of_ones_own_with_a_bfloat16_output(tiny_dataset, tmp_path):
    """Under mixed_bfloat16 a user's output layer made without dtype="float32" would put the softmax in
    bfloat16: refused before training, saying how to fix it."""
    cfg = TrainConfig(arch="tests.user_parts:two_layer", epochs=1, precision="mixed_bfloat16")
    with pytest.raises(ConfigError) as e:
        train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    msg = str(e.value)
    assert "\n" not in msg and "bfloat16 outputs" in msg and 'dtype="float32"' in msg
    assert not any(tmp_path.rglob("config.json"))


@pytest.mark.slow
def test_mixed_precision_trains_a_cnn_on_tensorflow(tmp_path):
    """A fresh process (Keras picks the backend at import): cnn + batch norm in mixed bfloat16 learns."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest\n"
        "from kbn.core.config import TrainConfig; from kbn.training.train import train\n"
        "ds = conftest.generated_dataset('mnist', (256, 64, 64))\n"
        "r = train(TrainConfig(arch='cnn', norm='batch', optimizer='adam', lr=1e-3, epochs=3, batch_size=32,"
        " precision='mixed_bfloat16'), sys.argv[1], verbose=False, dataset=ds)\n"
        "print(r.status, r.metrics['val_accuracy'])\n"
    )
    status, val, run, config = _train_in_a_fresh_process(code, "tensorflow", tmp_path)
    assert status == "finished" and float(val) > 0.5
    assert config["backend"] == "tensorflow" and config["settings"]["precision"] == "mixed_bfloat16"
    assert config["precision"]["compute_dtypes"] == ["bfloat16"] and config["precision"]["output_dtype"] == "float32"
    first, last = read_metrics(run)[0], read_metrics(run)[-1]
    assert last["loss"] < first["loss"]
