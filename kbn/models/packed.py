"""K trials of one cell (learning rates, seeds) trained together as one Keras model, in one compiled step.
It must not know sweeps, logs or data loading: Keras models in, one Keras model out.

Small networks are bound by per-step framework overhead, so K trials of one cell train at
once: the packed model holds K independent copies of the network side by side.

  Dense      -> PackedDense: kernel (K, in, out) applied with einsum, bias (K, out)
  Conv2D     -> Conv2D(K*F, groups=K) on the input repeated K times on the channel axis
  batch/group norm -> the same layer over the flattened K*units (K*groups) features: per-trial statistics
  layer/rms norm   -> ops.layer_normalization over the last axis with gamma/beta of shape (K, units)
  output     -> K outputs, one per trial, each with its own loss and accuracy; the loss is their sum,
                so each trial's gradient is its own loss's gradient.

Trials that share a data order (the learning rates of one seed) share the input images. Trials with
their own data order (seeds) train on (batch, K) indices into the training set, which the model
holds once (GatherExamples); they are evaluated through the same layers on shared images.

Each trial keeps its own weights (copied from the single model its seed builds), BN statistics,
optimizer state (slots are per element) and learning rate: `packed_optimizer` hands every
update_step an array of per-trial learning rates shaped like the variable instead of a scalar (every
Keras update rule here uses the learning rate linearly). Trained packed or one by one, a trial gives
the same numbers within float tolerance (tests/test_packed.py, every optimizer and norm).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
from keras import layers, ops

from kbn.core import compat, registry
from kbn.models import precision


class PackedDense(layers.Layer):
    """K Dense layers side by side: (batch, in) or (batch, K, in) -> (batch, K, units)."""

    def __init__(self, k: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.k, self.units = k, units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(self.k, input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.k, self.units), name="bias", initializer="zeros")

    def call(self, x):
        eq = "bi,kio->bko" if len(x.shape) == 2 else "bki,kio->bko"
        return ops.einsum(eq, x, self.kernel) + self.bias


class PackedLayerNorm(layers.Layer):
    """Layer (or RMS) norm over the last axis of (..., K, units), with per-trial gamma and beta
    (RMS: one per-trial scale), computed by the same Keras ops as the single layers."""

    def __init__(self, k: int, units: int, epsilon: float, rms: bool, **kwargs):
        super().__init__(**kwargs)
        self.k, self.units, self.epsilon, self.rms = k, units, epsilon, rms

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(self.k, self.units), name="gamma", initializer="ones")
        self.beta = None if self.rms else self.add_weight(shape=(self.k, self.units), name="beta",
                                                          initializer="zeros")

    def call(self, x):
        # gamma as (1, ..., K, units): same rank as x, so Keras broadcasts it instead of reshaping it
        lead = (1,) * (len(x.shape) - 2)
        gamma = ops.reshape(self.gamma, lead + (self.k, self.units))
        if self.rms:
            return ops.rms_normalization(x, gamma, axis=-1, epsilon=self.epsilon)
        beta = ops.reshape(self.beta, lead + (self.k, self.units))
        return ops.layer_normalization(x, gamma, beta, axis=-1, epsilon=self.epsilon)


class Take(layers.Layer):
    """Trial k's slice of (batch, K, classes): one output per trial."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, x):
        return x[:, self.index]


class GatherExamples(layers.Layer):
    """Per-trial training examples: indices (batch, K) into the training set -> (batch, K, ...).
    The set lives in the model as one non-trainable variable, so trials with their own data order
    (seeds) need no K-fold copy of the data on the host or in transfers."""

    def __init__(self, examples: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self._examples = examples

    def build(self, input_shape):
        self.table = self.add_weight(shape=self._examples.shape, name="examples", trainable=False,
                                     initializer=lambda shape, dtype=None: ops.convert_to_tensor(self._examples, dtype))

    def call(self, idx):
        return ops.take(self.table, ops.cast(idx, "int32"), axis=0)


class _Builder:
    """Walks a single model's layers and builds the packed one, remembering how to copy weights and
    where each packed variable keeps its trials (for the per-trial learning rates).

    The layers are made once and applied to up to two inputs: the images every trial shares (always
    used to evaluate, and to train when all trials see one data order) and, for trials with their own
    data order, per-trial indices into the training set."""

    def __init__(self, k: int):
        self.k = k
        self.copies = {}  # single layer name -> (packed layer, how)
        self.layout = {}  # packed variable path -> how its axes hold the K trials
        self._made = {}  # name -> layer: the second graph reuses the first one's layers
        self.policy = keras.config.dtype_policy()  # the single layer being packed's (kbn.models.precision); float64 under floatx float64

    def _layer(self, name, make):
        if name not in self._made:  # made as the single layer was: bfloat16 compute, float32 output layer
            with precision.policy(self.policy):
                self._made[name] = make()
        return self._made[name]

    def _reshape(self, x, shape, name):
        return self._layer(name, lambda: layers.Reshape(shape, name=name))(x)

    def build(self, single: keras.Model, train_examples: np.ndarray | None = None) -> tuple[keras.Model, keras.Model]:
        """(train model, eval model). With `train_examples`, the train model takes (batch, K) indices
        into them (GatherExamples); otherwise both are one model on shared images."""
        k, shape = self.k, tuple(single.input_shape[1:])
        image = keras.Input(shape, name="image")
        shared = keras.Model(image, self._graph(single, image, "shared"), name=f"packed{k}_{single.name}")
        if train_examples is None:
            return shared, shared
        idx = keras.Input((k,), dtype="int32", name="indices")
        x = self._layer("examples", lambda: GatherExamples(train_examples, name="examples"))(idx)
        return keras.Model(idx, self._graph(single, x, "trials"), name=f"packed{k}_seeds_{single.name}"), shared

    def _graph(self, single: keras.Model, x, state: str):
        """state: shared = (b, ...) with no trial axis yet; trials = (b, K, ...) each trial its own
        examples; dense = (b, K, units); conv = (b, H, W, K*F). Each layer type has its rule (RULES)."""
        for layer in single.layers[1:]:
            rule = RULES.get(type(layer))
            if rule is None:
                raise NotImplementedError(f"packing has no rule for {type(layer).__name__} ({layer.name})")
            self.policy = layer.dtype_policy
            x, state = rule(self, layer, x, state)
        return [self._layer(f"t{i}", lambda: Take(i, name=f"t{i}"))(x) for i in range(self.k)]

    def _track(self, layer, single_name, how):
        self.copies[single_name] = (layer, how)  # the second graph tracks the same layer again

    def copy_weights(self, packed: keras.Model, singles: list[keras.Model]) -> None:
        """Trial i starts from exactly the weights of single model i."""
        for name, (layer, how) in self.copies.items():
            src = [m.get_layer(name).get_weights() for m in singles]
            if how == "dense":  # (K, ...) leading trial axis
                new = [np.stack([s[j] for s in src]) for j in range(len(src[0]))]
            else:  # conv / norm features: K blocks along the last axis
                new = [np.concatenate([s[j] for s in src], axis=-1) for j in range(len(src[0]))]
            layer.set_weights(new)
            for var in layer.trainable_weights:
                self.layout[var.path] = how

    def extract_weights(self, j: int, single: keras.Model) -> keras.Model:
        """The inverse of `copy_weights`: trial j's weights (norm statistics included) set into `single`,
        a model built like the originals. Returns `single`."""
        for name, (layer, how) in self.copies.items():
            if how == "dense":  # (K, ...) leading trial axis
                mine = [w[j] for w in layer.get_weights()]
            else:  # K blocks along the last axis
                mine = [np.split(w, self.k, axis=-1)[j] for w in layer.get_weights()]
            single.get_layer(name).set_weights(mine)
        return single

    def lr_arrays(self, packed: keras.Model, lrs: list[float]) -> dict[str, np.ndarray]:
        """Per-variable learning rates shaped to broadcast against the variable."""
        lrs = np.asarray(lrs, np.float32)
        out = {}
        for var in packed.trainable_weights:
            how = self.layout[var.path]
            if how == "dense":
                out[var.path] = lrs.reshape((self.k,) + (1,) * (len(var.shape) - 1))
            else:
                block = var.shape[-1] // self.k
                out[var.path] = np.broadcast_to(np.repeat(lrs, block), var.shape).astype(np.float32)
        return out



# ---------------------------------------------------------------- packing rules, one per layer type
# rule(builder, single layer, x, state) -> (x, state); see _Builder._graph for the states.


def _flatten(b: _Builder, layer, x, state):
    k, name = b.k, layer.name
    if state == "conv":
        h, w, c = x.shape[1:]
        f = c // k
        x = b._reshape(x, (h, w, k, f), f"{name}_split")
        x = b._layer(f"{name}_trials_first", lambda: layers.Permute((3, 1, 2, 4), name=f"{name}_trials_first"))(x)
        return b._reshape(x, (k, h * w * f), name), "dense"
    if state == "trials":
        return b._reshape(x, (k, int(np.prod(x.shape[2:]))), f"{name}_per_trial"), state
    return b._layer(name, lambda: layers.Flatten(name=name))(x), state


def _dense(b: _Builder, layer, x, state):
    name = layer.name
    out = b._layer(name, lambda: PackedDense(b.k, layer.units, name=name))
    x = out(x)
    b._track(out, name, "dense")
    if layer.activation is not None and layer.activation.__name__ != "linear":
        x = b._layer(f"{name}_activation", lambda: layers.Activation(layer.activation, name=f"{name}_activation"))(x)
    return x, "dense"


def _conv(b: _Builder, layer, x, state):
    k, name = b.k, layer.name
    if state == "shared" and k > 1:
        x = b._layer(f"{name}_repeat", lambda: layers.Concatenate(axis=-1, name=f"{name}_repeat"))([x] * k)
    elif state == "trials":  # (b, K, H, W, C) -> (b, H, W, K*C): trial j's channels in block j
        h, w, c = x.shape[2:]
        x = b._layer(f"{name}_trials_last", lambda: layers.Permute((2, 3, 1, 4), name=f"{name}_trials_last"))(x)
        x = b._reshape(x, (h, w, k * c), f"{name}_merge_in")
    conv = b._layer(name, lambda: layers.Conv2D(k * layer.filters, layer.kernel_size, padding=layer.padding,
                                                groups=k, name=name))
    x = conv(x)
    b._track(conv, name, "conv")
    return x, "conv"


def _max_pool(b: _Builder, layer, x, state):
    name = layer.name
    return b._layer(name, lambda: layers.MaxPooling2D(layer.pool_size, padding=layer.padding, name=name))(x), state


def _activation(b: _Builder, layer, x, state):
    name = layer.name
    return b._layer(name, lambda: layers.Activation(layer.activation, name=name))(x), state


def _features_norm(b: _Builder, layer, x, state):
    """Batch or group norm over the flattened K*units (K*groups) features: per-trial statistics."""
    k, name = b.k, layer.name
    if state == "dense":
        u = x.shape[-1]
        x = b._reshape(x, (k * u,), f"{name}_flat")
    if isinstance(layer, layers.BatchNormalization):
        norm = b._layer(name, lambda: layers.BatchNormalization(momentum=layer.momentum, epsilon=layer.epsilon,
                                                                name=name))
    else:
        norm = b._layer(name, lambda: layers.GroupNormalization(groups=k * layer.groups, epsilon=layer.epsilon,
                                                                name=name))
    x = norm(x)
    b._track(norm, name, "blocks")
    if state == "dense":
        x = b._reshape(x, (k, u), f"{name}_unflat")
    return x, state


def _last_axis_norm(b: _Builder, layer, x, state):
    """Layer or RMS norm over the last axis, with per-trial gamma (and beta)."""
    k, name = b.k, layer.name
    units = x.shape[-1] if state == "dense" else x.shape[-1] // k
    rms = isinstance(layer, layers.RMSNormalization)
    norm = b._layer(name, lambda: PackedLayerNorm(k, units, layer.epsilon, rms, name=name))
    if state == "conv":
        h, w = x.shape[1:3]
        x = b._reshape(x, (h, w, k, units), f"{name}_split")
        x = b._reshape(norm(x), (h, w, k * units), f"{name}_merge")
    else:
        x = norm(x)
    b._track(norm, name, "dense")
    return x, state


# Keyed by exact type: a subclass (a user's layer) may compute something else, so it trains unpacked.
RULES = {
    layers.Flatten: _flatten,
    layers.Dense: _dense,
    layers.Conv2D: _conv,
    layers.MaxPooling2D: _max_pool,
    layers.Activation: _activation,
    layers.BatchNormalization: _features_norm,
    layers.GroupNormalization: _features_norm,
    layers.LayerNormalization: _last_axis_norm,
    layers.RMSNormalization: _last_axis_norm,
}


def cannot_pack(single: keras.Model, optimizer: str) -> str | None:
    """Why `single` trained by `optimizer` cannot be packed (None: it can): a layer without a rule,
    a network that is not a chain of layers, or an optimizer kbn does not know to be linear in its rate."""
    if not registry.get("optimizer", optimizer).packable:
        return f"optimizer {optimizer} is not kbn's own (packing needs an update linear in the learning rate)"
    previous = single.layers[0]
    for layer in single.layers[1:]:
        if type(layer) not in RULES:
            return f"packing has no rule for {type(layer).__name__} ({layer.name})"
        if compat.layer_parents(layer) != [previous]:
            return f"{layer.name} does not follow {previous.name} alone (packing handles a chain of layers)"
        previous = layer
    return None


def packed_optimizer(name: str, lr_arrays: dict[str, np.ndarray], **overrides) -> keras.optimizers.Optimizer:
    """The named optimizer whose learning rate is, per variable, an array of the trials' rates."""
    rec = registry.get("optimizer", name)
    base, fixed = rec.resolve(), dict(rec.fixed)

    PerTrialLR = compat.per_variable_lr(base, lr_arrays.get)  # AdamW's decay by lr * wd: per trial too
    PerTrialLR.__name__ = f"Packed{base.__name__}"
    return PerTrialLR(**{**fixed, **overrides, "learning_rate": 1.0})


class Packed(NamedTuple):
    train: keras.Model  # what `fit` trains: shared images, or per-trial indices (own data orders)
    evaluate: keras.Model  # shared images, the same layers and variables
    builder: _Builder  # where each trial's weights live in the packed variables

    def trial_model(self, j: int, single: keras.Model) -> keras.Model:
        """Trial j as a single model: its current weights set into `single` (built like the originals).

        >>> one = packed.trial_model(0, models.build("mlp", (28, 28, 1)))  # doctest: +SKIP
        >>> one.predict(x)  # == packed.evaluate.predict(x)[0], within float rounding  # doctest: +SKIP
        """
        return self.builder.extract_weights(j, single)


def build_packed(singles: list[keras.Model], lrs: list[float], optimizer: str, steps_per_execution: int = 1,
                 train_examples: np.ndarray | None = None) -> Packed:
    """Compiled packed models from K single models (already built with their seeds) and their lrs.
    With `train_examples` (the training set), each trial gets its own examples: the train model takes
    (batch, K) indices into it, so trials of different seeds keep their own data orders."""
    k = len(singles)
    b = _Builder(k)
    train, evaluate = b.build(singles[0], train_examples)
    b.copy_weights(train, singles)
    opt = packed_optimizer(optimizer, b.lr_arrays(train, lrs))
    losses, metrics = ["sparse_categorical_crossentropy"] * k, [["accuracy"] for _ in range(k)]
    train.compile(optimizer=opt, loss=losses, metrics=metrics, steps_per_execution=steps_per_execution)
    if evaluate is not train:
        evaluate.compile(loss=losses, metrics=metrics)
    return Packed(train, evaluate, b)


def trial_logs(logs: dict, k: int, prefix: str = "") -> list[dict]:
    """Split Keras's per-output logs (t3_loss, t3_accuracy, ...) into one dict per trial."""
    out = []
    for i in range(k):
        loss = logs.get(f"{prefix}t{i}_loss")
        acc = logs.get(f"{prefix}t{i}_accuracy")
        out.append({"loss": None if loss is None else float(loss), "accuracy": None if acc is None else float(acc)})
    return out


def is_packable(arch: str, optimizer: str) -> bool:
    """Whether a sweep should pull trials of this cell to pack: kbn's own networks (a user's is tried,
    and trains unpacked if `cannot_pack` finds why) with kbn's own optimizers."""
    return registry.get("arch", arch).packable and registry.get("optimizer", optimizer).packable
