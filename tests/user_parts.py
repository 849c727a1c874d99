"""A researcher's own components, as the tests name them: `tests.user_parts:<attr>` (run from the
repository root). Not a test file: pytest collects nothing here."""

import keras
from keras import layers

from kbn.models import dense_block, norm_layer


def half_momentum(learning_rate):
    """An optimizer factory taking the learning rate; declared plain for the findings."""
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.5)


half_momentum.kbn_family = "plain"


class ScaleNorm(layers.Layer):
    """ScaleNorm (Nguyen & Salazar 2019): x / rms(x) * g, one learnt scalar g per layer."""

    def build(self, input_shape):
        self.g = self.add_weight(shape=(), initializer="ones", name="g")

    def call(self, x):
        return x * self.g * keras.ops.rsqrt(keras.ops.mean(x * x, axis=-1, keepdims=True) + 1e-6)


class WideEpsilonBatchNorm(layers.BatchNormalization):
    """A researcher's batch norm: Keras's with a larger epsilon (a subclass, so kbn treats it as
    batch norm: population statistics; packing needs the exact type, so it trains unpacked)."""

    def __init__(self, epsilon=1e-2, **kwargs):
        super().__init__(epsilon=epsilon, **kwargs)


def two_layer(input_shape, num_classes, norm, activation="relu"):
    """Flatten -> Dense(32) -> norm -> act -> Dense(16) -> norm -> act -> softmax: a chain kbn can pack."""
    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    x = dense_block(x, 32, norm, activation, "hidden1")
    x = dense_block(x, 16, norm, activation, "hidden2")
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="out")(x))


def small_cnn(input_shape, num_classes, norm, activation="relu"):
    """A researcher's convolutional network, under a name that says nothing of it: Conv2D(8, 3) -> norm
    -> act -> MaxPool -> Dense(16) -> norm -> act -> softmax (float32, so it trains in mixed precision too)."""
    from kbn.models import block

    inputs = keras.Input(input_shape)
    x = block(inputs, layers.Conv2D(8, 3, padding="same", name="c1"), norm, activation, 8, "c1")
    x = layers.Flatten()(layers.MaxPooling2D(2)(x))
    x = dense_block(x, 16, norm, activation, "hidden")
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="out", dtype="float32")(x))


def norm_after_activation(input_shape, num_classes, norm, activation="relu"):
    """Wrong on purpose: the norm after the nonlinearity."""
    inputs = keras.Input(input_shape)
    x = layers.Dense(32, activation=activation, name="hidden")(layers.Flatten()(inputs))
    nl = norm_layer(norm, 32, "late_norm")
    x = nl(x) if nl is not None else x
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="out")(x))


NOT_CALLABLE = 3


class _PickySGD(keras.optimizers.SGD):
    def build(self, variables):
        # at the first step, inside the trial's training: a trial's own crash, not a bad component
        # (a factory that raises is refused as the user's error before the trial)
        if float(self.learning_rate) > 0.05:
            raise RuntimeError(f"picky_sgd refuses lr {float(self.learning_rate):g}")
        super().build(variables)


def picky_sgd(learning_rate):
    """An optimizer that crashes at rates above 0.05 when it first steps (a trial's own crash, mid-sweep)."""
    return _PickySGD(learning_rate=learning_rate)


picky_sgd.kbn_family = "plain"


def images_only(images):
    """Wrong on purpose: a builder that takes the images, not (input_shape, num_classes, norm)."""
    return images


def fixed_rate():
    """Wrong on purpose: an optimizer factory that takes no learning rate."""
    return keras.optimizers.SGD(0.1)

