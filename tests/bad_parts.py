"""User components that are wrong in ways kbn must name in one line (tests/test_bad_inputs.py names
them `tests.bad_parts:<attr>`). Not a test file: pytest collects nothing here."""

import keras
from keras import layers


def raising_factory(learning_rate):
    raise RuntimeError("the lab's optimizer needs a licence key")


class NeedsArgNorm(layers.Layer):
    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def call(self, x):
        return x


class RaisesInCall(layers.Layer):
    def call(self, x):
        raise ValueError("RaisesInCall refuses rank-2 inputs")


def unbuilt_sequential(input_shape, num_classes, norm, activation="relu"):
    return keras.Sequential([layers.Flatten(), layers.Dense(num_classes, activation="softmax")])


def for_cifar(input_shape, num_classes, norm, activation="relu"):
    inputs = keras.Input((32, 32, 3))
    x = layers.Flatten()(inputs)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))
