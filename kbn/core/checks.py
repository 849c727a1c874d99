"""The checks every setting goes through: one line naming the field, the value and what is allowed.
No Keras, no kbn module but the errors: kbn.core.config (the settings) and kbn.models (a network's options)
both use them."""

from __future__ import annotations

import math
from typing import Any

from kbn.core.errors import ConfigError

ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu", "gelu", "selu", "swish")


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{field}: unknown value {value!r}; choose from: {', '.join(choices)}")
    return value


# numpy's and Keras's generators take seeds of 32 bits: a larger one fails inside training.
SEED_MAX = 2**32 - 1


def check_seed(field: str, value) -> int:
    """One seed, 0..SEED_MAX (a run's, a sweep's final and search seeds)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{field}: got {value!r}; give an integer from 0 to {SEED_MAX} (the generators take 32 bits)")
    return value


def check_positive(field: str, value: Any, kind: type = int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not math.isfinite(value) or value <= 0:
        what = "a positive integer" if kind is int else "a positive number"
        raise ConfigError(f"{field}: got {value!r}; it must be {what}")
    return kind(value)


# Kernel initialisers: the builders' own (Keras's glorot_uniform), or gaussian:S = N(0, S^2) on every
# kernel, biases zero (Ioffe & Szegedy 4.1: "weights initialized to small random Gaussian values").
INITS = ("glorot_uniform", "gaussian:<stddev>")


def check_init(value) -> str:
    if value == "glorot_uniform":
        return value
    if isinstance(value, str) and value.startswith("gaussian:"):
        try:
            scale = float(value.split(":", 1)[1])
        except ValueError:
            scale = None
        if scale is not None and math.isfinite(scale) and scale > 0:
            return value
    raise ConfigError(f"init: got {value!r}; give glorot_uniform or gaussian:<stddev> with a positive stddev, "
                      "e.g. gaussian:0.1")


def init_scale(init: str) -> float | None:
    """The Gaussian stddev of `init`, None for the builders' own initialiser."""
    return float(init.split(":", 1)[1]) if init.startswith("gaussian:") else None
