"""A researcher's own optimizer and network, used by kbn without editing it (README, "Your own
components"): `examples.your_own.mine:SignSGD` and `examples.your_own.mine:residual_mlp`, run from
the repository root (kbn puts the current folder on the import path)."""

import keras
from keras import layers, ops

from kbn.models import dense_block


class SignSGD(keras.optimizers.Optimizer):
    """sign-SGD (Bernstein et al. 2018): w <- w - lr * sign(g). Working setting: lr 1e-3 to 3e-3,
    batch 128, on the residual MLP below with Fashion-MNIST."""

    kbn_family = "plain"  # what the findings' "plain vs adaptive" claim counts it as
    kbn_name = "signSGD"  # how kbn's tables name it

    def __init__(self, learning_rate=1e-3, name="signsgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        self.assign_sub(variable, lr * ops.sign(gradient))


def residual_mlp(input_shape, num_classes, norm, activation="relu", width=128, blocks=2):
    """Flatten -> Dense(width) block -> `blocks` x [x + Dense(width) block(x)] -> softmax, each block
    Dense -> norm -> activation through kbn's dense_block (the norm before the nonlinearity)."""
    inputs = keras.Input(input_shape, name="image")
    x = dense_block(layers.Flatten(name="flatten")(inputs), width, norm, activation, "stem")
    for i in range(1, blocks + 1):
        x = layers.Add(name=f"res{i}_add")([x, dense_block(x, width, norm, activation, f"res{i}")])
    outputs = layers.Dense(num_classes, activation="softmax", name="logits_softmax")(x)
    return keras.Model(inputs, outputs, name="residual_mlp")


residual_mlp.kbn_name = "residual MLP"  # how kbn's tables name it (default: the function's name)
