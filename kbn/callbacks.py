"""Keras callbacks that watch a run train (the run's files are kbn.runlog's)."""

from __future__ import annotations

import sys
import time

import keras

from kbn.runlog import is_finite


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training as soon as the loss is NaN or inf: in a learning-rate search that is a result."""

    def __init__(self):
        super().__init__()
        self.diverged = False

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not is_finite(loss):
            self.diverged = True
            self.model.stop_training = True


class Heartbeat(keras.callbacks.Callback):
    """Inside a long epoch (CNNs on CPU), a line every `every` seconds so the run is visibly alive."""

    def __init__(self, label: str, total_steps: int, every: float = 15.0, stream=sys.stderr):
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
            print(f"  {self.label}: step {done}/{self.total} loss {float(logs.get('loss', float('nan'))):.4f}"
                  f" (~{left:.0f} s left in this epoch)", file=self.stream, flush=True)
