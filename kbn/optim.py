"""Optimizers by name, each with one learning rate; other hyperparameters keep Keras's defaults
unless overridden (e.g. `momentum`, `beta_1`, `rho`, `weight_decay`)."""

from __future__ import annotations

import keras

from kbn.config import OPTIMIZERS, check_choice, check_positive
from kbn.errors import ConfigError

# name -> (Keras class, fixed defaults that define the method)
_SPECS = {
    "sgd": (keras.optimizers.SGD, {}),
    "sgdm": (keras.optimizers.SGD, {"momentum": 0.9}),
    "nesterov": (keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (keras.optimizers.Adam, {}),
    "adamw": (keras.optimizers.AdamW, {}),
    "nadam": (keras.optimizers.Nadam, {}),
    "adagrad": (keras.optimizers.Adagrad, {}),
    "adadelta": (keras.optimizers.Adadelta, {}),
    "rmsprop": (keras.optimizers.RMSprop, {}),
}
assert tuple(_SPECS) == OPTIMIZERS



def make_optimizer(name: str, lr: float, **overrides) -> keras.optimizers.Optimizer:
    """`make_optimizer("sgdm", 0.01)` -> SGD(learning_rate=0.01, momentum=0.9)."""
    check_choice("optimizer", name, OPTIMIZERS)
    lr = check_positive("lr", lr, float)
    cls, fixed = _SPECS[name]
    kwargs = {**fixed, **overrides, "learning_rate": lr}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer {name}: bad option in {sorted(overrides)}: {e}") from None
