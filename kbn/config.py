"""Settings as data: the names kbn knows and the validated configuration of one training run."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from kbn.errors import ConfigError

BASE_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = BASE_DATASETS + tuple(f"cluttered_{b}" for b in BASE_DATASETS)
ARCHS = ("mlp", "cnn", "deep_mlp", "deep_cnn", "ioffe_mlp")
NORMS = ("none", "batch", "layer", "group", "rms")
OPTIMIZERS = ("sgd", "sgdm", "nesterov", "adam", "adamw", "nadam", "adagrad", "adadelta", "rmsprop")
# The six optimizers the thesis compares, in its table order.
THESIS_OPTIMIZERS = ("sgd", "sgdm", "adam", "adagrad", "adadelta", "rmsprop")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu", "gelu", "selu", "swish")


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{field}: unknown value {value!r}; choose from: {', '.join(choices)}")
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run; `validate` rejects bad values with one clear line."""

    dataset: str = "fashion_mnist"
    arch: str = "mlp"
    norm: str = "none"
    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 5
    seed: int = 0
    batch_size: int = 128
    subset: int | None = None
    eval_every_steps: int | None = None  # None: evaluate once per epoch
    total_steps: int | None = None  # only with eval_every_steps; default epochs * steps/epoch
    test_every_epoch: bool = False
    activation: str | None = None  # None: the architecture's own
    depth: int | None = None
    width: int | None = None
    data_dir: str | None = None

    def __post_init__(self):
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("arch", self.arch, ARCHS)
        check_choice("norm", self.norm, NORMS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.activation is not None:
            check_choice("activation", self.activation, ACTIVATIONS)
        check_positive("lr", self.lr, float)
        check_positive("epochs", self.epochs)
        check_positive("batch_size", self.batch_size)
        for name in ("subset", "eval_every_steps", "total_steps", "depth", "width"):
            check_positive(name, getattr(self, name), allow_none=True)
        if self.total_steps is not None and self.eval_every_steps is None:
            raise ConfigError("total_steps: only meaningful with eval_every_steps")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed: got {self.seed!r}; it must be a non-negative integer")

    def run_name(self) -> str:
        """A folder name that says what the run is; identical settings give the same name."""
        parts = [self.dataset, self.arch, self.norm, self.optimizer, f"lr{self.lr:.4g}".replace("+", ""), f"s{self.seed}"]
        if self.subset:
            parts.append(f"n{self.subset}")
        return "-".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
