"""Keras callbacks that watch a run train (the run's files are kbn.runs.runlog's).
They must not know the run's files, the schedule or packing beyond the trial count."""

from __future__ import annotations

import time

import keras

from kbn.core import console, interrupts
from kbn.runs.runlog import is_finite


class StopOnNonFinite(keras.callbacks.Callback):
    """Notes which of `k` packed trials (k = 1: the run) has a NaN or inf loss; training stops once
    all have: in a learning-rate search divergence is a result, and the other trials go on."""

    def __init__(self, k: int = 1):
        super().__init__()
        self.k = k
        self.diverged = [False] * k

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        keys = ["loss"] if self.k == 1 else [f"t{i}_loss" for i in range(self.k)]
        for i, key in enumerate(keys):
            if key in logs and not is_finite(logs[key]):
                self.diverged[i] = True
        if all(self.diverged):
            self.model.stop_training = True


class Heartbeat(keras.callbacks.Callback):
    """Inside a long epoch (CNNs on CPU), a line every `every` seconds so the run is visibly alive."""

    def __init__(self, label: str, total_steps: int, every: float = 15.0, stream=None):
        super().__init__()
        self.label, self.total, self.every, self.stream = label, total_steps, every, stream

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            done = batch + 1
            left = (now - self._t0) / done * (self.total - done)
            line = (f"  {self.label}: step {done}/{self.total} loss {float(logs.get('loss', float('nan'))):.4f}"
                    f" (~{left:.0f} s left in this epoch)")
            if self.stream is None:
                console.note(line)  # kbn's log; a stream given is written to as it is
            else:
                print(line, file=self.stream, flush=True)


class StopOnInterrupt(keras.callbacks.Callback):
    """Ends `fit` at the next compiled call after Ctrl-C / SIGTERM (kbn.core.interrupts); the caller then
    raises Interrupted, so the run stays unfinished and is redone on resume."""

    def on_train_batch_end(self, batch, logs=None):
        if interrupts.requested():
            self.model.stop_training = True


class CallTimer(keras.callbacks.Callback):
    """The seconds of each compiled call of `fit`, `evaluate` or `predict`, told to a
    kbn.core.clock.FirstCalls with its steps and batch sizes (`sizes`: every batch's size in order; `spe`:
    batches per call). Put it last: it waits for the call's results, so its seconds are the call's."""

    def __init__(self, calls, kind: str, sizes: list[int], spe: int):
        super().__init__()
        self.calls, self.kind, self.sizes, self.spe, self._done = calls, kind, sizes, max(1, spe), 0

    def _begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def _end(self, batch, logs=None):
        for v in keras.tree.flatten(logs or {}):
            keras.ops.convert_to_numpy(v)  # on JAX, fit returns before the device is done
        part = self.sizes[self._done: self._done + self.spe]
        self._done += len(part)
        self.calls.call(self.kind, time.perf_counter() - self._t0, len(part), set(part))

    on_train_batch_begin = on_test_batch_begin = on_predict_batch_begin = _begin
    on_train_batch_end = on_test_batch_end = on_predict_batch_end = _end
