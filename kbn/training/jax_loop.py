"""A training period and an evaluation on JAX as compiled loops: a loop over up to `chunk` of the
model's own `train_step`s, the batches gathered from the training set on the device inside the loop.
Keras's `fit` on JAX dispatches every step from Python (its steps_per_execution is a Python loop) and
slices each batch on the host; on 2 CPU cores that costs about a third of an MLP epoch (kbn bench,
README). The steps, their order, the optimizer, the metrics (means over the period, as `fit` reports
them) and the callbacks' view (one `on_train_batch_end` per compiled call) are `fit`'s.
One training program serves every period length: a call takes a fixed `chunk` of index batches (the
unused ones padded) and how many of them to train (a traced count: `lax.fori_loop` stops there), so a
schedule with dense early evaluations compiles no more than one with none. A short last batch is a
second program. An evaluation is likewise one loop over the model's own `test_step`s (`evaluate`'s
batches and means), one program per evaluation set's shape.
Every program is compiled explicitly the first time its argument shapes are seen (`Programs`), and
the seconds that took are counted apart (`compile_seconds`): they are not training time.
It must not know runs, logs or sweeps: a compiled model, its data and index orders in, metrics out.
TensorFlow keeps `fit` (its steps_per_execution is already one graph).
"""

from __future__ import annotations

import collections
import json
import time

import keras
import numpy as np

from kbn.core import compat


_ON_DEVICE: dict[tuple, object] = {}
# Compiled loops by what they compute (see `signature`): a sweep's worker trains many runs of one cell,
# and tracing and loading the loops costs more than a small run's training (smoke sweep: 0.3 s of
# 0.8 s per trial). The oldest go first.
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 32


def signature(model: keras.Model, *extra) -> str | None:
    """What a compiled loop over `model`'s steps computes, apart from the state passed to it: the
    network's and the optimizer's configurations (the learning rate aside: it is an optimizer variable,
    passed in with the state), the loss and metrics, and `extra` (batch shapes, trial count). None
    where that cannot be vouched for: a learning-rate schedule, an optimizer or layer that is not
    Keras's own (its behaviour need not be in its configuration)."""
    opt = getattr(model, "optimizer", None)  # an uncompiled model (the probe's) has none
    parts = [model] + list(model.layers) + ([opt] if opt is not None else [])
    if any(not type(p).__module__.startswith("keras.") for p in parts):
        return None
    ocfg = dict(opt.get_config()) if opt is not None else {}
    ocfg.pop("name", None)  # Keras numbers each new optimizer: adam, adam_1, ...
    if not isinstance(ocfg.pop("learning_rate", 0.0), float):
        return None
    # loss and metrics; not how many steps Keras's own fit runs per call (a loop's chunk is in `extra`)
    compiled = {k: v for k, v in (model.get_compile_config() or {}).items() if k not in ("optimizer", "steps_per_execution")}
    return json.dumps([type(opt).__name__, ocfg, model.get_config(), compiled, extra], sort_keys=True, default=repr)


class Programs:
    """`fn` jitted, compiled once per shapes of its arguments: explicitly, the first time they are
    seen (`lower(...).compile()`: tracing, lowering and XLA, or the disk cache's copy), so that the
    seconds it took are known. `__call__` returns (fn's result, seconds spent compiling for it)."""

    def __init__(self, fn):
        import jax

        self._jit, self._by_shapes = jax.jit(fn), {}

    def __call__(self, *args):
        import jax

        leaves, tree = jax.tree_util.tree_flatten(args)
        key = (tree, tuple(map(jax.typeof, leaves)))
        seconds = 0.0
        if key not in self._by_shapes:
            t0 = time.perf_counter()
            self._by_shapes[key] = self._jit.lower(*args).compile()
            seconds = time.perf_counter() - t0
        return self._by_shapes[key](*args), seconds


def _compiled(key: str | None, make):
    """The Programs for `key`, made by `make()` the first time (None: never shared)."""
    if key is None:
        return make()
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
    else:
        _COMPILED[key] = make()
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    return _COMPILED[key]


def _kept(arrays: tuple, tag, make):
    """`make()`, made once per process for these arrays (and `tag`) and dropped when any of them goes:
    every run of a sweep's worker trains and evaluates on the same dataset arrays."""
    import weakref

    key = (*map(id, arrays), tag)
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = make()
        for a in arrays:
            weakref.finalize(a, _ON_DEVICE.pop, key, None)
    return _ON_DEVICE[key]


def on_device(a: np.ndarray):
    """`a` as a JAX array, copied once per process (157 MB of Fashion-MNIST images); the copy goes
    when `a` does."""
    import jax.numpy as jnp

    return _kept((a,), "array", lambda: jnp.asarray(a))


def cuts(n: int, batch_size: int, chunk: int) -> list[tuple[int, int, int]]:
    """(first, end, steps) of each compiled call over n examples: up to `chunk` full batches each,
    then the short last batch in a call of its own (as `fit` and `evaluate` batch them)."""
    full = n // batch_size
    out = [(s * batch_size, min(s + chunk, full) * batch_size, min(chunk, full - s)) for s in range(0, full, chunk)]
    return out + ([(full * batch_size, n, 1)] if n % batch_size else [])


class JaxPeriods:
    """Trains `model` (compiled, on the JAX backend) period by period. `own_orders`: the model takes
    (batch, K) indices and gathers its examples itself (kbn.models.packed's seeds); else it takes images.
    `k` trials: the targets are a list of K (one per output) as `fit` is given them."""

    def __init__(self, model: keras.Model, x_train: np.ndarray, y_train: np.ndarray, k: int, own_orders: bool,
                 batch_size: int, chunk: int):
        import jax.numpy as jnp

        self.model, self.k, self.own_orders = model, k, own_orders
        self.batch_size, self.chunk = batch_size, chunk
        self.compile_seconds = 0.0  # spent compiling for this object's calls (0 where the programs were shared)
        self._x = None if own_orders else on_device(x_train)  # own_orders: the model holds the images
        self._y = on_device(y_train)
        # fit builds the metrics and the optimizer on its first batch; so does this, without training
        compat.symbolic_build(model, self._batch(jnp.zeros((batch_size, k if own_orders else 1), jnp.int32),
                                                 self._x, self._y))
        # train_step's logs are the metrics' results: their shapes, without tracing train_step once more
        self._logs = {key: (np.shape(v), v.dtype) for key, v in model.get_metrics_result().items()}
        # a loop compiled for an identical model and optimizer runs this one's state as well
        self._loop = _compiled(signature(model, "train", batch_size, k, own_orders, chunk), lambda: Programs(self._steps))

    def _batch(self, ids, x, y):
        """The (x, y) one step trains on: `ids` is (batch, 1 or K) rows of the training set (x, y)."""
        if self.own_orders:
            return ids, [y[ids[:, j]] for j in range(self.k)]
        y = y[ids[:, 0]]
        return x[ids[:, 0]], (y if self.k == 1 else [y] * self.k)

    def _steps(self, state, ids, count, x, y):
        """`ids` (chunk, batch, cols): the first `count` (traced: one program for every count) as
        train_steps in one compiled loop; the metrics after the last (Keras's train_step reports the
        metrics' running means). The training set comes in as arguments: closed over, it would be a
        constant of every compiled program (and its cache key)."""
        import jax
        import jax.numpy as jnp

        def one(i, carry):
            return self.model.train_step(carry[1], self._batch(ids[i], x, y))

        logs = {key: jnp.zeros(shape, dtype) for key, (shape, dtype) in self._logs.items()}
        return jax.lax.fori_loop(0, count, one, (logs, state))

    def _state(self):
        m = self.model
        return ([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables],
                [v.value for v in m.optimizer.variables], [v.value for v in m.metrics_variables])

    def _store(self, state) -> None:
        m = self.model
        variables = (m.trainable_variables, m.non_trainable_variables, m.optimizer.variables, m.metrics_variables)
        for vs, values in zip(variables, state):
            for v, value in zip(vs, values):
                v.assign(value)

    def train(self, idx: np.ndarray, callbacks: list, epoch: int) -> dict:
        """One period over `idx` (examples, 1 or K), in batches of batch_size (the last may be short, as
        in `fit`); returns the period's logs as floats. A callback may stop the period early
        (`model.stop_training`), as in `fit`, between compiled calls."""
        model, b = self.model, self.batch_size
        model.stop_training = False
        model.reset_metrics()
        for cb in callbacks:
            cb.set_model(model)
            cb.on_epoch_begin(epoch)
        state, logs, done = self._state(), {}, 0
        idx = idx.astype(np.int32)
        for lo, hi, steps in cuts(len(idx), b, self.chunk):
            rows = (hi - lo) // steps  # the batch size, or the short last batch's
            ids = np.zeros((self.chunk if rows == b else 1, rows, idx.shape[1]), np.int32)  # padded: one shape
            ids[:steps] = idx[lo:hi].reshape(steps, rows, -1)
            (logs, state), seconds = self._loop(state, ids, np.int32(steps), self._x, self._y)
            self.compile_seconds += seconds
            done += steps
            logs = {key: float(v) for key, v in logs.items()}
            for cb in callbacks:
                cb.on_train_batch_end(done - 1, logs)
            if model.stop_training:
                break
        self._store(state)
        return logs


class JaxEvaluation:
    """`model.evaluate(x, y, batch_size)` as compiled loops over the model's `test_step` (same batches,
    the last one short; the metrics are means over all examples, as `evaluate` returns them). `k`
    outputs (packed trials) all score against y. Each evaluation set goes to the device once."""

    def __init__(self, model: keras.Model, batch_size: int, k: int):
        self.model, self.batch_size, self.k = model, batch_size, k
        self.compile_seconds = 0.0
        self._loop = _compiled(signature(model, "evaluate", batch_size, k), lambda: Programs(self._steps))

    def _steps(self, state, x, y):
        """x, y: (batches, batch, ...); that many test_steps in one compiled loop."""
        import jax

        def one(st, batch):
            bx, by = batch
            logs, st = self.model.test_step(st, (bx, by if self.k == 1 else [by] * self.k))
            return st, logs

        state, logs = jax.lax.scan(one, state, (x, y))
        return jax.tree_util.tree_map(lambda v: v[-1], logs), state

    def _batches(self, x: np.ndarray, y: np.ndarray) -> list[tuple]:
        """(x, y) per compiled call: the full batches stacked, then the short rest; on the device once
        per process and evaluation set."""
        import jax.numpy as jnp

        def make():
            return [(jnp.asarray(x[lo:hi]).reshape(steps, -1, *x.shape[1:]), jnp.asarray(y[lo:hi]).reshape(steps, -1))
                    for lo, hi, steps in cuts(len(x), self.batch_size, max(1, len(x) // self.batch_size))]

        return _kept((x, y), ("batches", self.batch_size), make)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict:
        """The metrics `model.evaluate(x, y, batch_size, return_dict=True)` returns, as floats."""
        model, b = self.model, self.batch_size
        compat.symbolic_build(model, (x[:b], y[:b] if self.k == 1 else [y[:b]] * self.k))  # as evaluate does
        model.reset_metrics()
        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                 [v.value for v in model.metrics_variables])
        logs = {}
        for xb, yb in self._batches(x, y):
            (logs, state), seconds = self._loop(state, xb, yb)
            self.compile_seconds += seconds
        return {key: float(v) for key, v in logs.items()}


class JaxOutputs:
    """`model.predict(x, batch_size=len(x))` (inference mode) as one compiled program, `x` on the
    device once; its compilation counted in `compile_seconds` like the loops'."""

    def __init__(self, model: keras.Model):
        self.model, self.compile_seconds = model, 0.0
        self._run = _compiled(signature(model, "outputs"), lambda: Programs(self._outputs))

    def _outputs(self, trainable, non_trainable, x):
        return self.model.stateless_call(trainable, non_trainable, x, training=False)[0]

    def __call__(self, x: np.ndarray):
        m = self.model
        out, seconds = self._run([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables],
                                 on_device(x))
        self.compile_seconds += seconds
        return out
