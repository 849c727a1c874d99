"""Optimizers by name (kbn.core.registry's records, or a user's import string), each with one learning
rate; other hyperparameters keep Keras's defaults unless overridden (e.g. `momentum`, `rho`).
It must not know networks, data or training loops."""

from __future__ import annotations

import keras

from kbn.core import registry
from kbn.core.checks import check_positive


def make_optimizer(name: str, lr: float, **overrides) -> keras.optimizers.Optimizer:
    """`make_optimizer("sgdm", 0.01)` -> SGD(learning_rate=0.01, momentum=0.9);
    `make_optimizer("mylab.opt:Lion", 1e-4)` -> whatever mylab.opt.Lion(learning_rate=1e-4) makes."""
    rec = registry.get("optimizer", name)
    lr = check_positive("lr", lr, float)
    return rec.make(lr, **overrides)
