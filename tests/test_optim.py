import keras
import pytest

from kbn.core import registry
from kbn.core.errors import ConfigError
from kbn.models.optimizers import make_optimizer

EXPECTED = {
    "sgd": ("SGD", {"momentum": 0.0, "nesterov": False}),
    "sgdm": ("SGD", {"momentum": 0.9, "nesterov": False}),
    "nesterov": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "adam": ("Adam", {"beta_1": 0.9}),
    "adamw": ("AdamW", {"weight_decay": 0.004}),
    "nadam": ("Nadam", {}),
    "adagrad": ("Adagrad", {}),
    "adadelta": ("Adadelta", {"rho": 0.95}),
    "rmsprop": ("RMSprop", {"rho": 0.9}),
}


@pytest.mark.parametrize("name", tuple(registry.OPTIMIZERS))
def test_each_optimizer_by_name_with_its_learning_rate(name):
    opt = make_optimizer(name, 0.0125)
    cls, attrs = EXPECTED[name]
    assert type(opt).__name__ == cls
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(0.0125)
    for k, v in attrs.items():
        assert getattr(opt, k) == pytest.approx(v)


def test_overrides_apply_and_bad_ones_are_named():
    assert make_optimizer("sgdm", 0.1, momentum=0.5).momentum == pytest.approx(0.5)
    assert make_optimizer("adam", 0.1, beta_1=0.8).beta_1 == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="adam"):
        make_optimizer("adam", 0.1, momentum=0.9)
    with pytest.raises(ConfigError, match="choose from"):
        make_optimizer("lbfgs", 0.1)
    with pytest.raises(ConfigError, match="lr"):
        make_optimizer("sgd", 0)
