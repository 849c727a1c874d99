import pytest

from kbn.config import TrainConfig
from kbn.errors import ConfigError


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("dataset", "imagenet", ["dataset", "'imagenet'", "mnist", "cifar10", "fashion_mnist"]),
        ("arch", "resnet", ["arch", "'resnet'", "deep_cnn", "ioffe_mlp"]),
        ("norm", "weight", ["norm", "'weight'", "batch", "layer"]),
        ("optimizer", "lion", ["optimizer", "'lion'", "sgdm", "adadelta"]),
        ("lr", -0.1, ["lr", "-0.1", "positive"]),
        ("lr", 0.0, ["lr", "positive"]),
        ("epochs", 0, ["epochs", "0", "positive integer"]),
        ("batch_size", 2.5, ["batch_size", "2.5"]),
        ("subset", -5, ["subset", "-5"]),
        ("seed", -1, ["seed", "-1"]),
        ("activation", "softplus2", ["activation", "relu"]),
    ],
)
def test_bad_values_name_field_value_and_choices(field, value, expect):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{field: value})
    msg = str(e.value)
    assert "\n" not in msg
    for part in expect:
        assert part in msg


def test_total_steps_needs_eval_every_steps():
    with pytest.raises(ConfigError, match="eval_every_steps"):
        TrainConfig(total_steps=100)


def test_run_name_is_stable_and_descriptive():
    a = TrainConfig(dataset="mnist", arch="cnn", norm="batch", optimizer="sgdm", lr=0.01, seed=3)
    assert a.run_name() == "mnist-cnn-batch-sgdm-lr0.01-s3"
    assert TrainConfig(subset=1000).run_name().endswith("-n1000")
    assert a.run_name() == TrainConfig(**a.to_dict()).run_name()
