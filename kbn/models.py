"""Model builders: the thesis's four networks and the poster's Ioffe & Szegedy MLP.

Every hidden layer is  linear map (Dense or Conv2D) -> normalization -> activation : the norm sits
right after the linear transform and before the nonlinearity, as in Ioffe & Szegedy (2015). The linear
maps keep their bias (as the thesis's Keras code did), so adding a norm changes only the norm's own
parameters. Every network ends in Dense(num_classes) + softmax.

Norms: none | batch (BatchNormalization) | layer (LayerNormalization) | group (GroupNormalization,
up to 8 groups of at least 4 channels) | rms (RMSNormalization: x / sqrt(mean(x^2) + eps) * scale).
"""

from __future__ import annotations

import keras
from keras import layers

from kbn.config import ACTIVATIONS, ARCHS, NORMS, check_choice, check_init, check_positive, init_scale


def norm_layer(norm: str, channels: int, name: str):
    """The normalization layer for `channels` features (None for `none`)."""
    check_choice("norm", norm, NORMS)
    if norm == "none":
        return None
    if norm == "batch":
        return layers.BatchNormalization(name=name)
    if norm == "layer":
        return layers.LayerNormalization(name=name)
    if norm == "rms":
        return layers.RMSNormalization(name=name)
    groups = max(g for g in range(1, 9) if g == 1 or (channels % g == 0 and channels // g >= 4))
    return layers.GroupNormalization(groups=groups, name=name)


def _block(x, linear, norm: str, activation: str, channels: int, name: str):
    x = linear(x)
    nl = norm_layer(norm, channels, f"{name}_{norm}norm")
    if nl is not None:
        x = nl(x)
    return layers.Activation(activation, name=f"{name}_act")(x)


def _dense_stack(x, widths, norm, activation, prefix="dense"):
    for i, units in enumerate(widths, 1):
        x = _block(x, layers.Dense(units, name=f"{prefix}{i}"), norm, activation, units, f"{prefix}{i}")
    return x


def _head(inputs, x, num_classes, name):
    outputs = layers.Dense(num_classes, activation="softmax", name="logits_softmax")(x)
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
        x = _block(x, layers.Conv2D(width, 5, padding="same", name=f"conv{i}"), norm, activation, width, f"conv{i}")
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
            x = _block(x, conv, norm, activation, maps, f"conv{b}_{j}")
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


BUILDERS = {"mlp": mlp, "cnn": cnn, "deep_mlp": deep_mlp, "deep_cnn": deep_cnn, "ioffe_mlp": ioffe_mlp}
assert tuple(BUILDERS) == ARCHS


def apply_init(model: keras.Model, init: str) -> keras.Model:
    """Draw every kernel (Dense and Conv2D, the output layer's too) afresh from `init`
    (config.INITS); biases stay zero. In layer order from Keras's seeded generator, so a seed gives
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
    """Build `arch` by name; None options keep the architecture's own defaults; `init`: the
    builders' own kernels (glorot_uniform) or gaussian:<stddev> (`apply_init`)."""
    check_choice("arch", arch, ARCHS)
    check_choice("norm", norm, NORMS)
    kwargs = {}
    if activation is not None:
        kwargs["activation"] = check_choice("activation", activation, ACTIVATIONS)
    if depth is not None:
        kwargs["depth"] = check_positive("depth", depth)
    if width is not None:
        kwargs["width"] = check_positive("width", width)
    return apply_init(BUILDERS[arch](tuple(input_shape), num_classes, norm=norm, **kwargs), init)
