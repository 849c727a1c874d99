"""kbn.training.callbacks, each on a real (tiny) Keras fit: a non-finite loss stops training once every packed
trial has one, the heartbeat says the step and the loss Keras reports, and a stop asked for by a
signal ends fit at the next step."""

import io
import os
import signal
import re

import keras
import numpy as np
import pytest

from kbn.training.callbacks import Heartbeat, StopOnInterrupt, StopOnNonFinite

BATCHES = 8  # per epoch: 64 examples in batches of 8


class Record(keras.callbacks.Callback):
    """The logs Keras hands each batch's end, in order."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(dict(logs or {}))


def fit(callbacks, x=None, epochs=2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32") if x is None else x
    y = rng.integers(0, 3, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rec = Record()
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=[*callbacks, rec])
    return model, rec


def test_a_non_finite_loss_stops_the_run_at_once():
    stop = StopOnNonFinite()
    x = np.full((64, 4), np.inf, dtype="float32")
    model, rec = fit([stop], x)
    assert len(rec.batches) == 1 and not np.isfinite(rec.batches[0]["loss"])
    assert stop.diverged == [True] and model.stop_training


def test_finite_losses_train_every_step():
    stop = StopOnNonFinite()
    _, rec = fit([stop])
    assert len(rec.batches) == 2 * BATCHES and stop.diverged == [False]


def test_packed_trials_stop_only_when_all_have_diverged():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    stop = StopOnNonFinite(k=3)
    stop.set_model(model)
    model.stop_training = False  # as fit sets it
    stop.on_train_batch_end(0, {"t0_loss": 0.5, "t1_loss": float("nan"), "t2_loss": 0.7})
    assert stop.diverged == [False, True, False] and not model.stop_training
    stop.on_train_batch_end(1, {"t0_loss": float("inf"), "t1_loss": 0.1, "t2_loss": 0.7})
    assert stop.diverged == [True, True, False] and not model.stop_training  # a trial stays diverged
    stop.on_train_batch_end(2, {"t0_loss": 0.2, "t1_loss": 0.1, "t2_loss": float("-inf")})
    assert stop.diverged == [True, True, True] and model.stop_training


def test_the_heartbeat_says_each_step_and_the_loss_keras_reports():
    out = io.StringIO()
    _, rec = fit([Heartbeat("mnist-mlp", total_steps=BATCHES, every=0.0, stream=out)], epochs=1)
    lines = out.getvalue().splitlines()
    assert len(lines) == BATCHES
    for i, (line, logs) in enumerate(zip(lines, rec.batches)):
        m = re.fullmatch(r"  mnist-mlp: step (\d+)/8 loss (\S+) \(~(\d+) s left in this epoch\)", line)
        assert m, line
        assert int(m.group(1)) == i + 1 and float(m.group(2)) == pytest.approx(logs["loss"], abs=5e-5)
    assert lines[-1].endswith("(~0 s left in this epoch)")


def test_a_quiet_heartbeat_says_nothing_within_its_interval():
    out = io.StringIO()
    fit([Heartbeat("x", total_steps=BATCHES, every=3600.0, stream=out)], epochs=1)
    assert out.getvalue() == ""


class SignalAt(keras.callbacks.Callback):
    """Sends this process `sig` at the end of batch `at`, as Ctrl-C or a scheduler's SIGTERM would."""

    def __init__(self, at, sig):
        super().__init__()
        self.at, self.sig = at, sig

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.at:
            os.kill(os.getpid(), self.sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_fit_at_the_next_step(signals_to_kbn, sig):
    model, rec = fit([SignalAt(2, sig), StopOnInterrupt()])
    assert len(rec.batches) == 3 and model.stop_training  # batches 0, 1 and 2: it stopped where it was asked


def test_without_a_signal_fit_runs_to_its_end(signals_to_kbn):
    _, rec = fit([StopOnInterrupt()])
    assert len(rec.batches) == 2 * BATCHES
