"""Model builders: the thesis's four networks and the poster's Ioffe & Szegedy MLP.
It must not know optimizers, data loading, training or logs.

Every hidden layer is  linear map (Dense or Conv2D) -> normalization -> activation : the norm sits
right after the linear transform and before the nonlinearity, as in Ioffe & Szegedy (2015). The linear
maps keep their bias (as the thesis's Keras code did), so adding a norm changes only the norm's own
parameters. Every network ends in Dense(num_classes) + softmax.

Norms are kbn.core.registry's: none | batch (BatchNormalization) | layer (LayerNormalization) | group
(GroupNormalization, up to 8 groups of at least 4 channels) | rms (RMSNormalization: x / sqrt(mean(x^2)
+ eps) * scale), or a user's Keras layer class given as an import string.

A network of one's own is a builder `(input_shape, num_classes, norm, activation) -> keras.Model` that
places its norms with `norm_layer` or `dense_block` (so the norm sits before the activation, as in
kbn's own networks); `build` refuses one whose norm layers are not where they were asked for.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
from keras import layers

from kbn.core import compat, registry
from kbn.core.checks import ACTIVATIONS, check_choice, check_init, check_positive, init_scale
from kbn.core.errors import ConfigError


def norm_layer(norm: str, channels: int, name: str):
    """The normalization layer `norm` names for `channels` features (None for `none`)."""
    return registry.get("norm", norm).make(channels, name)


def block(x, linear, norm: str, activation: str, channels: int, name: str):
    """linear map -> norm -> activation: how every hidden layer is built (user networks too)."""
    x = linear(x)
    nl = norm_layer(norm, channels, f"{name}_{registry.slug(norm)}norm")
    if nl is not None:
        x = nl(x)
    return layers.Activation(activation, name=f"{name}_act")(x)


def dense_block(x, units: int, norm: str, activation: str, name: str):
    """Dense(units) -> norm -> activation, for networks of one's own.

    >>> x = kbn.models.dense_block(x, 128, norm, activation, "block1")  # doctest: +SKIP
    """
    return block(x, layers.Dense(units, name=name), norm, activation, units, name)


def _dense_stack(x, widths, norm, activation, prefix="dense"):
    for i, units in enumerate(widths, 1):
        x = dense_block(x, units, norm, activation, f"{prefix}{i}")
    return x


def _head(inputs, x, num_classes, name):
    # float32 under a mixed policy (kbn.models.precision): a bfloat16 softmax keeps ~3 digits of each
    # probability; otherwise the policy's own (float64 where floatx is float64: the exactness tests)
    mixed = keras.config.dtype_policy().name.startswith("mixed")
    outputs = layers.Dense(num_classes, activation="softmax", name="logits_softmax",
                           dtype="float32" if mixed else None)(x)
    return keras.Model(inputs, outputs, name=name)


def mlp(input_shape, num_classes=10, norm="none", activation="relu", depth=3, width=100):
    """Thesis MLP: Flatten -> 3 x [Dense(100) -> norm -> ReLU] -> Dense(10) + softmax.

    MNIST (784 inputs), no norm: 99,710 parameters; with batch norm 100,910 (4 x 100 per BN layer,
    half of them non-trainable moving statistics). Working setting: Adam lr 1e-3, batch 128,
    5 epochs on Fashion-MNIST gives about 87-88% test accuracy.
    """
    inputs = keras.Input(input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = _dense_stack(x, [width] * depth, norm, activation)
    return _head(inputs, x, num_classes, f"mlp_{norm}")


def deep_mlp(input_shape, num_classes=10, norm="none", activation="relu", depth=20, width=30):
    """Thesis deep MLP: Flatten -> 20 x [Dense(30) -> norm -> ReLU] -> Dense(10) + softmax.

    MNIST, no norm: 41,530 parameters. Without BN, plain SGD stays near chance (~10%) for many
    epochs (thesis Table 11); with BN, SGD lr ~0.1 reaches ~85% after 2 epochs on MNIST.
    """
    inputs = keras.Input(input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = _dense_stack(x, [width] * depth, norm, activation)
    return _head(inputs, x, num_classes, f"deep_mlp_{norm}")


def cnn(input_shape, num_classes=10, norm="none", activation="relu", depth=2, width=32):
    """Thesis CNN: 2 x [Conv 32 maps 5x5 'same' -> norm -> ReLU -> MaxPool 2x2] -> Flatten
    -> Dense(256) -> norm -> ReLU -> Dense(10) + softmax.

    MNIST (28x28x1), no norm: 430,698 parameters (7x7x32 = 1568 features into Dense(256)).
    Working setting: Adam lr 1e-3, batch 128: ~99% on MNIST within 5 epochs.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i in range(1, depth + 1):
        x = block(x, layers.Conv2D(width, 5, padding="same", name=f"conv{i}"), norm, activation, width, f"conv{i}")
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense_stack(x, [256], norm, activation)
    return _head(inputs, x, num_classes, f"cnn_{norm}")


def deep_cnn(input_shape, num_classes=10, norm="none", activation="relu", depth=5, width=32):
    """Thesis deep CNN: 5 blocks; block i = 3 x [Conv k_i maps 3x3 'same' -> norm -> ReLU] then
    MaxPool 2x2 ('same', so 28x28 inputs reach 1x1), k = 32, 64, 128, 256, 512; then Flatten ->
    Dense(256) -> norm -> ReLU -> Dense(10) + softmax.

    CIFAR-10 (32x32x3), no norm: 7,989,770 parameters. Needs BN (or a small lr) to leave chance level
    with SGD; GPU work: about a minute per CIFAR-10 epoch on 2 CPU cores.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for b in range(1, depth + 1):
        maps = width * 2 ** (b - 1)
        for j in range(1, 4):
            conv = layers.Conv2D(maps, 3, padding="same", name=f"conv{b}_{j}")
            x = block(x, conv, norm, activation, maps, f"conv{b}_{j}")
        x = layers.MaxPooling2D(2, padding="same", name=f"pool{b}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _dense_stack(x, [256], norm, activation)
    return _head(inputs, x, num_classes, f"deep_cnn_{norm}")


def ioffe_mlp(input_shape, num_classes=10, norm="none", activation="sigmoid", depth=3, width=100):
    """Ioffe & Szegedy (2015) section 4.1, the poster's network: Flatten -> 3 x [Dense(100) -> norm
    -> sigmoid] -> Dense(10) + softmax. Same parameter count as `mlp` (99,710 on MNIST, no norm).

    Working setting (poster): plain SGD, batch 60, 50,000 steps, test accuracy every 5,000 steps;
    BN and LN reach ~97-98% on MNIST, no norm ~97%, BN fastest early.
    """
    inputs = keras.Input(input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = _dense_stack(x, [width] * depth, norm, activation)
    return _head(inputs, x, num_classes, f"ioffe_mlp_{norm}")


# kbn's own networks by the name their registry entry (kbn.core.registry.ARCHS) gives as its builder
BUILDERS = {f.__name__: f for f in (mlp, deep_mlp, cnn, deep_cnn, ioffe_mlp)}


def apply_init(model: keras.Model, init: str) -> keras.Model:
    """Draw every kernel (Dense and Conv2D, the output layer's too) afresh from `init`
    (kbn.core.checks.INITS); biases stay zero. In layer order from Keras's seeded generator, so a seed gives
    the same kernels with and without a norm (norm layers hold no kernels)."""
    scale = init_scale(check_init(init))
    if scale is None:
        return model
    for layer in model.layers:
        if isinstance(layer, (layers.Dense, layers.Conv2D)):
            # one initializer per layer: one unseeded initializer gives every same-shaped kernel the same
            # values; each draws its seed from Python's generator, which keras.utils.set_random_seed seeds
            gaussian = keras.initializers.RandomNormal(mean=0.0, stddev=scale)
            layer.kernel.assign(gaussian(layer.kernel.shape, dtype=layer.kernel.dtype))
    return model


def build(arch, input_shape, num_classes=10, norm="none", activation=None, depth=None, width=None,
          init="glorot_uniform"):
    """Build `arch` (a name or a user's import string); None options keep the architecture's own
    defaults; `init`: the builders' own kernels (glorot_uniform) or gaussian:<stddev> (`apply_init`).
    A user's network is checked: its norms must be where `norm` asked for them."""
    rec = registry.get("arch", arch)
    norm_rec = registry.get("norm", norm)
    builder = BUILDERS[rec.builder] if rec.source is None else rec.resolve()
    kwargs = {}
    if activation is not None:
        kwargs["activation"] = check_choice("activation", activation, ACTIVATIONS)
    if depth is not None:
        kwargs["depth"] = check_positive("depth", depth)
    if width is not None:
        kwargs["width"] = check_positive("width", width)
    if rec.source is None:
        if norm_rec.source is None:
            return apply_init(builder(tuple(input_shape), num_classes, norm=norm, **kwargs), init)
        try:  # a user's norm inside kbn's network: a failure is the norm's
            model = builder(tuple(input_shape), num_classes, norm=norm, **kwargs)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            raise registry.failure("norm", norm, f"in network {arch!r}", e) from None
        return apply_init(model, init)
    params = inspect.signature(builder).parameters
    takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for key in ("depth", "width"):
        if key in kwargs and key not in params and not takes_all:
            raise ConfigError(f"{key}: the builder {arch!r} takes no {key} argument; leave --{key} out")
    act = params.get("activation")
    if "activation" not in kwargs and act is not None and act.default is act.empty:
        kwargs["activation"] = "relu"  # a builder without a default activation gets kbn's usual one
    try:
        model = builder(tuple(input_shape), num_classes, norm=norm, **kwargs)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's builder failed: say where
        raise registry.failure("arch", arch, f"to build with norm {norm!r}", e) from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"arch: {arch!r} returned a {type(model).__name__}, not a keras.Model")
    if not model.built or not model.inputs:
        raise ConfigError(f"arch: {arch!r} returned a {type(model).__name__} that is not built (it has no inputs); "
                          "start it with keras.Input(input_shape)")
    got = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or got != tuple(input_shape):
        shapes = ", ".join(str(tuple(t.shape[1:])) for t in model.inputs)
        raise ConfigError(f"arch: {arch!r} built a network for inputs {shapes} but the images are "
                          f"{tuple(input_shape)}; build it on keras.Input(input_shape), the shape it is given")
    check_norm_placement(model, norm_rec, arch)
    check_outputs(model, input_shape, num_classes, arch)
    return apply_init(model, init)


def check_outputs(model: keras.Model, input_shape, num_classes: int, arch: str) -> None:
    """A network of one's own must end in one probability per class: kbn trains it with cross-entropy
    on probabilities and scores it by the largest output, so 5 or 37 outputs for 10 classes, or logits,
    would train and report numbers that mean nothing. Checked on two images of seeded noise (numpy's
    generator: the network's own seeded weights are not touched)."""
    refuse = f"arch: {arch!r} "
    how = '; end it in Dense(num_classes, activation="softmax")'
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        shapes = ", ".join(str(tuple(o.shape)) for o in model.outputs)
        raise ConfigError(f"{refuse}gives outputs of shape {shapes}, not (batch, {num_classes}){how}")
    units = model.outputs[0].shape[-1]
    if units != num_classes:
        raise ConfigError(f"{refuse}ends in {units} outputs for the {num_classes} classes of the data{how}")
    if str(model.outputs[0].dtype) != "float32":  # a mixed policy (kbn.models.precision) reached the output layer
        raise ConfigError(f"{refuse}gives {model.outputs[0].dtype} outputs; kbn computes the softmax and the loss "
                          f'in float32: give its output layer dtype="float32" (Keras\'s mixed-precision rule){how}')
    images = np.random.default_rng(0).random((2, *input_shape), dtype=np.float32)
    out = keras.ops.convert_to_numpy(model(images, training=False)).astype(np.float64)
    sums = out.sum(axis=1)
    if not (np.all(out >= -1e-6) and np.allclose(sums, 1.0, atol=1e-3)):
        raise ConfigError(f"{refuse}gives outputs that are not probabilities (an example's sum to {sums[0]:.4g}, "
                          f"the smallest is {out.min():.4g}); kbn trains on probabilities{how}")


def _neighbours(layer, outbound: bool) -> list:
    return compat.layer_children(layer) if outbound else compat.layer_parents(layer)


def check_norm_placement(model: keras.Model, norm, arch: str) -> None:
    """A network of one's own must hold the asked-for norm, each right after a linear map (a layer
    with a kernel and no activation of its own) and right before an Activation, and no other norm."""
    kinds = {r.name: r.resolve() for r in registry.NORMS.values() if r.layer}
    want = norm.resolve()
    if want is not None:
        kinds[norm.name] = want
    found = [layer for layer in model.layers if any(isinstance(layer, c) for c in kinds.values())]
    refuse = f"arch: {arch!r} with norm {norm.name!r}: "
    how = "; place norms with kbn.models.norm_layer or dense_block"
    for layer in found:
        if want is None or not isinstance(layer, want):
            raise ConfigError(f"{refuse}found {type(layer).__name__} {layer.name!r}, which was not asked for{how}")
        before, after = _neighbours(layer, False), _neighbours(layer, True)
        linear = [b for b in before if hasattr(b, "kernel")
                  and getattr(b, "activation", None) in (None, keras.activations.linear)]
        if len(before) != 1 or not linear:
            names = ", ".join(f"{type(b).__name__} {b.name!r}" for b in before) or "the input"
            raise ConfigError(f"{refuse}{type(layer).__name__} {layer.name!r} follows {names}, not a linear map{how}")
        if not after or not all(isinstance(a, layers.Activation) for a in after):
            names = ", ".join(f"{type(a).__name__} {a.name!r}" for a in after) or "nothing"
            raise ConfigError(f"{refuse}{type(layer).__name__} {layer.name!r} is followed by {names}, "
                              f"not an activation{how}")
    if want is not None and not found:
        names = ", ".join(dict.fromkeys(type(layer).__name__ for layer in model.layers))
        raise ConfigError(f"{refuse}no {want.__name__} layer in the model (it holds {names}){how}")
    hidden = _hidden_linear(model)
    bare = [(layer, after) for layer, after in hidden if want is not None and after is not None]
    if bare:
        layer, after = bare[0]
        into = "its own activation" if after is layer else f"{type(after).__name__} {after.name!r} directly"
        raise ConfigError(f"{refuse}{len(bare)} of {len(hidden)} hidden layers have no {want.__name__} "
                          f"({type(layer).__name__} {layer.name!r} goes into {into}){how}")


def _is_softmax(layer) -> bool:
    return isinstance(layer, layers.Softmax) or getattr(layer, "activation", None) is keras.activations.softmax


def _hidden_linear(model: keras.Model) -> list:
    """(layer, what follows it without a norm, else None) for each hidden linear map: a layer with a
    kernel whose own activation is a nonlinearity other than softmax (then it follows itself), or that
    feeds an Activation other than softmax (then that Activation follows it). The output layer is none."""
    out = []
    for layer in model.layers:
        if not hasattr(layer, "kernel") or _is_softmax(layer):
            continue
        act = getattr(layer, "activation", None)
        if act is not None and act is not keras.activations.linear:
            out.append((layer, layer))
            continue
        after = _neighbours(layer, True)
        if after and all(isinstance(a, layers.Activation) and not _is_softmax(a) for a in after):
            out.append((layer, after[0]))
        elif after and not any(_is_softmax(a) for a in after) and not all(
                isinstance(a, (layers.Add, layers.Concatenate)) for a in after):
            out.append((layer, None))  # into a norm (checked above) or something kbn has no rule for
    return out
