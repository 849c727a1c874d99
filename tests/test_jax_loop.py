"""A period trained as compiled loops (kbn.training.jax_loop) gives what Keras's fit gives: the same steps on
the same batches, the same metrics, the same weights (float32 rounding apart)."""

import keras
import numpy as np
import pytest

from kbn.core.config import TrainConfig
from kbn.runs.runlog import read_metrics
from kbn.training.train import train_many

CASES = [("mlp", "batch", "adam", [(1e-3, 0)]), ("mlp", "none", "sgdm", [(0.05, 0)]),
         ("ioffe_mlp", "layer", "sgd", [(0.5, 0)]),
         ("mlp", "batch", "rmsprop", [(1e-3, 0), (1e-2, 0)]),  # packed, one data order
         ("mlp", "batch", "sgd", [(0.1, 0), (0.1, 1)])]  # packed, each seed its own order


def _untimed(rows):
    """metrics.csv's rows without their seconds (wall, training, compile), which no two runs share."""
    return [{k: v for k, v in r.items() if k not in ("wall_time", "train_time", "compile_time")} for r in rows]


def _weights(folder):
    return keras.saving.load_model(folder / "model.keras", compile=False).get_weights()


@pytest.mark.parametrize("arch,norm,opt,trials", CASES, ids=[f"{a}-{n}-{o}-k{len(t)}" for a, n, o, t in CASES])
def test_compiled_loop_equals_fit(tmp_path, tiny_dataset, monkeypatch, arch, norm, opt, trials):
    # 3 epochs with a short last batch each (the tiny training set is not a multiple of 48)
    assert len(tiny_dataset.y_train) % 48
    cfgs = [TrainConfig(arch=arch, norm=norm, optimizer=opt, lr=lr, seed=seed, epochs=3, batch_size=48)
            for lr, seed in trials]
    out = {}
    for mode in ("off", "on"):
        monkeypatch.setenv("KBN_JAX_LOOP", mode)
        out[mode] = train_many(cfgs, tmp_path / mode, verbose=False, dataset=tiny_dataset)
    for fit, loop in zip(out["off"], out["on"]):
        a, b = read_metrics(fit.folder), read_metrics(loop.folder)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for ra, rb in zip(a, b):
            for col in ("loss", "accuracy", "val_loss", "val_accuracy"):
                assert rb[col] == pytest.approx(ra[col], rel=1e-4, abs=1e-5), (col, ra, rb)
        for wa, wb in zip(_weights(fit.folder), _weights(loop.folder)):
            np.testing.assert_allclose(wb, wa, rtol=1e-3, atol=1e-5)


def test_compiled_loop_calls_per_period(tmp_path, tiny_dataset):
    """steps_per_execution caps a compiled call: 2 steps per call, so a period of 5 full batches and a
    short one is 4 calls, each seen by the callbacks, and a callback can stop the period between
    them, as in fit."""
    from kbn import models
    from kbn.models import optimizers as optim
    from kbn.training import jax_loop

    keras.utils.set_random_seed(0)
    model = models.build("mlp", tiny_dataset.input_shape, tiny_dataset.num_classes, "none")
    model.compile(optimizer=optim.make_optimizer("sgd", 0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    n = 5 * 16 + 7
    x, y = tiny_dataset.x_train[:n], tiny_dataset.y_train[:n]
    periods = jax_loop.JaxPeriods(model, x, y, 1, False, 16, 2)

    class Seen(keras.callbacks.Callback):
        def __init__(self, stop_after=None):
            super().__init__()
            self.batches, self.stop_after = [], stop_after

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)
            if self.stop_after is not None and len(self.batches) == self.stop_after:
                self.model.stop_training = True

    seen = Seen()
    before = model.get_weights()[0].copy()
    logs = periods.train(np.arange(n)[:, None], [seen], 0)
    assert seen.batches == [1, 3, 4, 5]  # the last step done by each call (0-based)
    assert set(logs) == {"loss", "accuracy"} and np.isfinite(logs["loss"])
    assert not np.allclose(model.get_weights()[0], before)  # the trained weights are the model's
    stopped = Seen(stop_after=1)
    periods.train(np.arange(n)[:, None], [stopped], 1)
    assert stopped.batches == [1]


@pytest.mark.parametrize("k", [1, 2])
def test_compiled_evaluation_equals_evaluate(tiny_dataset, k):
    """Two full batches and a short one: the means over all examples, as evaluate returns them."""
    from kbn import models
    from kbn.training import jax_loop
    from kbn.models.packed import build_packed

    keras.utils.set_random_seed(0)
    singles = [models.build("mlp", tiny_dataset.input_shape, tiny_dataset.num_classes, "batch") for _ in range(k)]
    if k == 1:
        model = singles[0]
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        model = build_packed(singles, [0.1, 0.01], "sgd").evaluate
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2 * 16 + 5, *tiny_dataset.input_shape)).astype("float32")
    y = rng.integers(0, tiny_dataset.num_classes, len(x))
    want = model.evaluate(x, y if k == 1 else [y] * k, batch_size=16, verbose=0, return_dict=True)
    got = jax_loop.JaxEvaluation(model, 16, k).evaluate(x, y)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(float(want[key]), rel=1e-5), key
    # the same images with other labels are another evaluation set, not the one already on the device
    y2 = (y + 1) % tiny_dataset.num_classes
    want2 = model.evaluate(x, y2 if k == 1 else [y2] * k, batch_size=16, verbose=0, return_dict=True)
    got2 = jax_loop.JaxEvaluation(model, 16, k).evaluate(x, y2)
    for key in want2:
        assert got2[key] == pytest.approx(float(want2[key]), rel=1e-5), key
    # a short last batch weighs by its examples: the mean over 37 examples, not over 3 batches
    first = jax_loop.JaxEvaluation(model, 16, k).evaluate(x[:32], y[:32])
    rest = jax_loop.JaxEvaluation(model, 16, k).evaluate(x[32:], y[32:])
    loss = "loss" if k == 1 else "t0_loss"
    assert got[loss] == pytest.approx((32 * first[loss] + 5 * rest[loss]) / 37, rel=1e-5)


def test_dataset_arrays_go_to_the_device_once_and_leave_with_them():
    import gc

    from kbn.training import jax_loop

    a = np.arange(12, dtype="float32").reshape(3, 4)
    d = jax_loop.on_device(a)
    assert jax_loop.on_device(a) is d and np.array_equal(np.asarray(d), a)
    key = id(a)
    assert any(key in k for k in jax_loop._ON_DEVICE)
    del a
    gc.collect()
    assert all(key not in k for k in jax_loop._ON_DEVICE)  # keys: (id of each array..., tag)


def test_shared_compiled_loops_give_each_run_its_own_result(tmp_path, tiny_dataset):
    """A worker's runs of one cell share the compiled loops (traced once): a run trained after others
    gives exactly what it gives in a fresh process, its own learning rate and seed included; another
    optimizer configuration (sgd vs sgdm: one Keras class) gets loops of its own."""
    from kbn.training import jax_loop

    def run(opt, lr, seed, where):
        cfg = TrainConfig(arch="mlp", norm="batch", optimizer=opt, lr=lr, seed=seed, epochs=2, batch_size=48)
        return train_many([cfg], tmp_path / where, verbose=False, dataset=tiny_dataset)[0]

    jax_loop._COMPILED.clear()
    fresh = {(o, lr): run(o, lr, 1, f"fresh-{o}") for o, lr in (("sgdm", 0.05), ("adam", 3e-3))}
    jax_loop._COMPILED.clear()
    run("sgd", 0.5, 0, "first")
    run("adam", 1e-3, 0, "first")
    n = len(jax_loop._COMPILED)
    after = {(o, lr): run(o, lr, 1, "after") for o, lr in (("sgdm", 0.05), ("adam", 3e-3))}
    assert len(jax_loop._COMPILED) == n + 2  # sgdm's train and evaluation loops are its own; adam's shared
    for key, a in fresh.items():
        b = after[key]
        assert _untimed(read_metrics(a.folder)) == _untimed(read_metrics(b.folder))
        for wa, wb in zip(_weights(a.folder), _weights(b.folder)):
            np.testing.assert_array_equal(wa, wb)


def test_no_shared_loops_for_what_a_configuration_cannot_vouch_for(tiny_dataset):
    """A learning-rate schedule (not an optimizer variable) or a class outside Keras: its loop is
    its own (None), since its configuration need not say everything the loop computes."""
    from kbn import models
    from kbn.training import jax_loop

    def compiled(optimizer):
        m = models.build("mlp", tiny_dataset.input_shape, tiny_dataset.num_classes, "none")
        m.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        return jax_loop.signature(m, "train")

    assert compiled(keras.optimizers.SGD(0.1)) == compiled(keras.optimizers.SGD(0.2)) is not None
    assert compiled(keras.optimizers.SGD(0.1)) != compiled(keras.optimizers.SGD(0.1, momentum=0.9))
    assert compiled(keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))) is None

    class Mine(keras.optimizers.SGD):
        pass

    assert compiled(Mine(0.1)) is None


def _count_traces(monkeypatch) -> dict:
    """How often each loop's Python function is traced (once per program compiled), from now on."""
    from kbn.training import jax_loop

    traced = {"train": 0, "evaluate": 0}
    for kind, cls in (("train", jax_loop.JaxPeriods), ("evaluate", jax_loop.JaxEvaluation)):
        real = cls._steps

        def counting(self, *args, _real=real, _kind=kind):
            traced[_kind] += 1
            return _real(self, *args)

        monkeypatch.setattr(cls, "_steps", counting)
    jax_loop._COMPILED.clear()
    return traced


def _timed(rows: list[dict]) -> None:
    """Each row's cumulative training and compile seconds: training excludes compilation, both fit in
    the wall time, and neither goes down."""
    for r in rows:
        assert r["train_time"] > 0 and r["compile_time"] >= 0
        assert r["train_time"] + r["compile_time"] <= r["wall_time"] + 1e-3, r
    for a, b in zip(rows, rows[1:]):
        assert b["train_time"] >= a["train_time"] and b["compile_time"] >= a["compile_time"]


def test_one_training_program_whatever_the_period_lengths(tmp_path, tiny_dataset, monkeypatch):
    """Dense early evaluations give periods of 3, 4, 5, 3, 5 and 20 steps: one training program (all
    batches full) and one evaluation program (validation and test have one shape), compiled in the
    first period and evaluation and timed apart from training; a second run of the cell compiles
    nothing. An epoch-based run with a short last batch: a second training program, no more."""
    import json

    traced = _count_traces(monkeypatch)
    kw = dict(arch="mlp", norm="batch", optimizer="sgd", lr=0.1, batch_size=16, eval_every_steps=20, total_steps=60,
              eval_steps=[3, 7, 12, 15])
    first = train_many([TrainConfig(seed=0, **kw)], tmp_path / "a", verbose=False, dataset=tiny_dataset)[0]
    rows = read_metrics(first.folder)
    assert [r["step"] for r in rows] == [3, 7, 12, 15, 20, 40, 60]
    assert traced == {"train": 1, "evaluate": 1}
    _timed(rows)
    assert rows[0]["compile_time"] > 0 and rows[-1]["compile_time"] == rows[0]["compile_time"]  # nothing later
    result = json.loads((first.folder / "result.json").read_text())["metrics"]
    assert result["train_time"] == rows[-1]["train_time"] and result["compile_time"] == rows[-1]["compile_time"]
    second = train_many([TrainConfig(seed=1, **kw)], tmp_path / "a", verbose=False, dataset=tiny_dataset)[0]
    assert traced == {"train": 1, "evaluate": 1}
    assert {r["compile_time"] for r in read_metrics(second.folder)} == {0.0}  # the programs were the first run's
    epochs = train_many([TrainConfig(arch="mlp", norm="batch", optimizer="sgd", lr=0.1, batch_size=48, epochs=3)],
                        tmp_path / "b", verbose=False, dataset=tiny_dataset)[0]
    assert len(tiny_dataset.y_train) % 48
    assert traced == {"train": 3, "evaluate": 1}  # batch 48: its full batches' program and the short batch's
    _timed(read_metrics(epochs.folder))


def test_compiled_loop_equals_fit_with_periods_of_many_lengths(tmp_path, tiny_dataset, monkeypatch):
    """The loop's traced step count stops where fit's period ends: periods of 2, 3, 2, 7, 7, 7 steps."""
    cfg = TrainConfig(arch="ioffe_mlp", norm="batch", optimizer="sgd", lr=0.5, batch_size=32, eval_every_steps=7,
                      total_steps=28, eval_steps=[2, 5])
    out = {}
    for mode in ("off", "on"):
        monkeypatch.setenv("KBN_JAX_LOOP", mode)
        out[mode] = train_many([cfg], tmp_path / mode, verbose=False, dataset=tiny_dataset)[0]
    a, b = read_metrics(out["off"].folder), read_metrics(out["on"].folder)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 5, 7, 14, 21, 28]
    for ra, rb in zip(a, b):
        for col in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert rb[col] == pytest.approx(ra[col], rel=1e-4, abs=1e-5), (col, ra, rb)
    for wa, wb in zip(_weights(out["off"].folder), _weights(out["on"].folder)):
        np.testing.assert_allclose(wb, wa, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cnn", "tests.user_parts:small_cnn"])
def test_a_conv_net_trains_as_plain_fit_does_and_says_why(tmp_path, tiny_dataset, arch, capsys):
    """A convolutional network (kbn's, or a user's import string) on JAX and a CPU: the path read from its
    built model is Keras's fit, not kbn's compiled loop (jax-ml/jax#12868), said on the run's first line
    and in config.json; its numbers are those of a plain `fit` (one step per call) over the same order."""
    import json

    from kbn.models import optimizers as optim
    from kbn.training.train import IndexStream, initial_model

    cfg = TrainConfig(arch=arch, norm="batch", optimizer="adam", lr=1e-3, seed=0, epochs=2, batch_size=48,
                      **({"width": 4} if arch == "cnn" else {}))
    (run,) = train_many([cfg], tmp_path, verbose=True, dataset=tiny_dataset, log=print)
    first = capsys.readouterr().out.splitlines()[0]
    path = json.loads((run.folder / "config.json").read_text())["path"]
    assert path["backend"] == "jax" and path["loop"] == "fit" and "Conv2D" in path["reason"], path
    assert first.startswith(f"kbn: {cfg.run_name()}: jax, fit loop: has ") and "jax-ml/jax#12868" in first
    model = initial_model(cfg, tiny_dataset)
    model.compile(optimizer=optim.make_optimizer("adam", 1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    n, order = len(tiny_dataset.y_train), IndexStream(len(tiny_dataset.y_train), 0)
    for p, row in enumerate(read_metrics(run.folder)):
        idx = order.take(n)
        hist = model.fit(tiny_dataset.x_train[idx], tiny_dataset.y_train[idx], batch_size=48, epochs=p + 1,
                         initial_epoch=p, shuffle=False, verbose=0).history
        assert row["loss"] == pytest.approx(hist["loss"][-1], rel=1e-4, abs=1e-5)
        assert row["accuracy"] == pytest.approx(hist["accuracy"][-1], rel=1e-4, abs=1e-5)
    for wa, wb in zip(model.get_weights(), _weights(run.folder)):
        np.testing.assert_allclose(wb, wa, rtol=1e-3, atol=1e-5)
