"""Batch norm's inference statistics as Ioffe & Szegedy (2015, Algorithm 2) define them: before an
evaluation, every BatchNormalization layer's moving_mean and moving_variance are replaced by the
population statistics of the frozen network over a fixed set of training mini-batches,

    E[x] <- E_B[mu_B],   Var[x] <- m/(m-1) * E_B[sigma^2_B]

(m: the values per feature in one batch, the batch size times H*W for a convolution; sigma^2_B the
batch's biased variance, what the layer normalised with while it trained). The pass runs in training
mode, as PreciseBN (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm") does: every BN layer
normalises by its batch's own statistics, so a deeper layer's inputs are the ones it saw in training,
not ones shaped by the shallower layers' lagging moving averages (an inference-mode pass would give).

Which batches (`population_batches`): the same ones for every run of a dataset, whatever its seed,
drawn from a generator of their own. So a trial trained packed (kbn.models.packed: K trials side by side, one
BN layer over their K*units features, each feature its own trial's) gets exactly the statistics it
gets trained alone, and the arms of a paired comparison are evaluated with statistics over the same
images. The pass is one compiled call (JAX: jax.jit; TensorFlow: tf.function) over all the batches;
training never reads the result (it normalises with batch statistics), so the weights a run learns
are the same under either rule.

Keras's own rule ("moving": moving averages, momentum 0.99 for kbn's "batch") needs nothing here.
Layer, group and RMS norms normalise each example by its own statistics: they have no population
statistics, and `describe` says so rather than silently doing nothing.

It must not know runs, configurations, logs or sweeps: a built Keras model and its training images in,
its BN layers' statistics set.
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np
from keras import layers, ops

# The population batches' own generator: no run seed draws from it.
POPULATION_SEED = 20150211  # Ioffe & Szegedy's arXiv submission date


def bn_layers(model: keras.Model) -> list[layers.BatchNormalization]:
    """The BatchNormalization layers (a user's subclass included) whose statistics a population pass
    sets. A frozen one (trainable False) is left out: Keras normalises it with its moving statistics
    even in training, so rewriting them would change the training."""
    return [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization) and layer.trainable]


def population_batches(n: int, batches: int, batch_size: int) -> np.ndarray:
    """(batches, batch_size) indices into n training examples: consecutive seeded permutations of the
    training set cut into batches (as training cuts its own), the same for every run and seed."""
    rng = np.random.default_rng(POPULATION_SEED)
    need = batches * batch_size
    order = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])
    return order[:need].reshape(batches, batch_size)


def describe(model: keras.Model, rule: str, batches: int, batch_size: int) -> dict:
    """What `rule` does for `model`, for config.json: the layers it concerns and their numbers."""
    found = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    out = {"rule": rule, "layers": [layer.name for layer in found]}
    if rule == "moving":
        return {**out, "momentum": sorted({float(layer.momentum) for layer in found})}
    out.update(batches=batches, batch_size=batch_size, batches_seed=POPULATION_SEED,
               values_per_batch={layer.name: _values_per_batch(layer, batch_size) for layer in bn_layers(model)})
    frozen = [layer.name for layer in found if not layer.trainable]
    if frozen:
        out["frozen_left_moving"] = frozen
    if not found:
        out["note"] = ("no BatchNormalization layer: nothing is recomputed (layer, group and RMS norms "
                       "normalise each example by its own statistics and have no population statistics)")
    return out


def _values_per_batch(layer, batch_size: int) -> int:
    """m: the values one feature of `layer` takes in one batch (batch size x the other axes' sizes)."""
    shape = layer.input.shape
    axis = layer.axis % len(shape)
    return batch_size * int(np.prod([d for i, d in enumerate(shape[1:], 1) if i != axis]))


class PopulationStatistics:
    """`update()` sets every BN layer of `model` (bn_layers) to its population statistics over
    `batches` training batches of `batch_size` (population_batches), computed in one compiled call;
    `seconds` adds up the updates, `compile_seconds` is the compilation apart (made when constructed,
    with a first call whose result is dropped).
    `model` takes images (a packed model: the one on shared images)."""

    def __init__(self, model: keras.Model, x_train: np.ndarray, batches: int, batch_size: int):
        self.layers = bn_layers(model)
        self.seconds = self.compile_seconds = 0.0
        if not self.layers:
            return
        # node 0: a packed model's shared-images graph, which it builds first
        self.inputs = keras.Model(model.inputs[0], [layer.input for layer in self.layers], name="bn_inputs")
        ids = population_batches(len(x_train), batches, batch_size)
        self.x = ops.convert_to_tensor(x_train[ids])  # (batches, batch_size, ...): once per run
        self.axes = [[i for i in range(len(t.shape)) if i != layer.axis % len(t.shape)]
                     for t, layer in zip(self.inputs.outputs, self.layers)]
        m = np.array([_values_per_batch(layer, batch_size) for layer in self.layers], np.float64)
        self.correction = np.where(m > 1, m / np.maximum(m - 1, 1), 1.0)  # m = 1: a variance of 0, nothing to correct
        t0 = time.perf_counter()
        key = _signature(self.inputs, (tuple(self.x.shape), str(self.x.dtype)))
        self._pass = _compiled(self._moments, self._state() + [self.x], key)
        np.asarray(self._pass(*self._state(), self.x)[-1][1])  # a first call's set-up (TF: ~0.3 s) is compiling too
        self.compile_seconds = time.perf_counter() - t0

    def _state(self) -> list:
        return [[v.value for v in self.inputs.trainable_variables],
                [v.value for v in self.inputs.non_trainable_variables]]

    def _moments(self, trainable, non_trainable, x):
        """Per BN layer, (E_B[mu_B], E_B[sigma^2_B]) over the batches of x, the weights as given."""

        def one(i, sums):
            outs, _ = self.inputs.stateless_call(trainable, non_trainable, x[i], training=True)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            # float32 sums whatever the layers compute in (kbn.models.precision): the statistics are float32
            moments = [ops.moments(ops.cast(o, "float32"), axes) for o, axes in zip(outs, self.axes)]
            return [(s_mu + mu, s_var + var) for (s_mu, s_var), (mu, var) in zip(sums, moments)]

        zeros = [(ops.zeros(layer.moving_mean.shape), ops.zeros(layer.moving_mean.shape)) for layer in self.layers]
        sums = ops.fori_loop(0, x.shape[0], one, zeros)
        return [(s_mu / x.shape[0], s_var / x.shape[0]) for s_mu, s_var in sums]

    def update(self) -> float:
        """Recompute and set the statistics; returns the seconds it took."""
        if not self.layers:
            return 0.0
        t0 = time.perf_counter()
        for layer, c, (mu, var) in zip(self.layers, self.correction, self._pass(*self._state(), self.x)):
            layer.moving_mean.assign(mu)
            layer.moving_variance.assign(var * c)
        np.asarray(self.layers[-1].moving_variance)  # the work done, not just dispatched
        took = time.perf_counter() - t0
        self.seconds += took
        return took


# JAX: compiled passes by what they compute (`_signature`), so a sweep worker's runs of one cell compile
# theirs once. A compiled program holds no model or data (the weights and batches are its arguments).
# The oldest go first.
_PASSES: dict[str, object] = {}
_PASSES_MAX = 16


def _signature(model: keras.Model, batches: tuple) -> str | None:
    """What a pass over `model` (the network up to its BN layers' inputs) computes, for batches of
    that (shape, dtype); None off JAX or where a layer is not Keras's own (its configuration need not say what
    it computes)."""
    if keras.backend.backend() != "jax" or any(not type(layer).__module__.startswith("keras.")
                                                for layer in model.layers):
        return None
    return json.dumps([model.get_config(), batches], sort_keys=True, default=repr)


def _compiled(fn, args: list, key: str | None):
    """`fn` compiled for `args` on the backend in use (eager where kbn knows no compiler), shared by
    `key` (None: never shared)."""
    if key in _PASSES:
        return _PASSES[key]
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        made = jax.jit(fn).lower(*args).compile()
    elif backend == "tensorflow":
        import tensorflow as tf

        made = tf.function(fn).get_concrete_function(*args)
    else:
        made = fn
    if key is not None:
        _PASSES[key] = made
        while len(_PASSES) > _PASSES_MAX:
            _PASSES.pop(next(iter(_PASSES)))
    return made
