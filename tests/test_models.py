import numpy as np
import pytest
from keras import layers

from kbn import models
from kbn.core import registry
from kbn.core.errors import ConfigError

ARCHS, NORMS = tuple(registry.ARCHS), tuple(registry.NORMS)

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)

# Exact parameter counts (trainable + BN moving statistics), computed by hand in the builders' docstrings.
PARAMS = {
    ("mlp", MNIST, "none"): 784 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10,  # 99,710
    ("mlp", MNIST, "batch"): 99_710 + 3 * 4 * 100,
    ("mlp", MNIST, "layer"): 99_710 + 3 * 2 * 100,
    ("mlp", MNIST, "rms"): 99_710 + 3 * 100,
    ("ioffe_mlp", MNIST, "none"): 99_710,
    ("deep_mlp", MNIST, "none"): 784 * 30 + 30 + 19 * (30 * 30 + 30) + 30 * 10 + 10,  # 41,530
    ("deep_mlp", MNIST, "batch"): 41_530 + 20 * 4 * 30,
    ("cnn", MNIST, "none"): (25 * 32 + 32) + (25 * 32 * 32 + 32) + (7 * 7 * 32 * 256 + 256) + 2570,  # 430,698
    ("cnn", MNIST, "batch"): 430_698 + 4 * (32 + 32 + 256),
    ("cnn", CIFAR, "none"): (75 * 32 + 32) + (25 * 32 * 32 + 32) + (8 * 8 * 32 * 256 + 256) + 2570,
    ("deep_cnn", CIFAR, "none"): 7_989_770,
    ("deep_cnn", CIFAR, "batch"): 7_989_770 + 4 * 3 * (32 + 64 + 128 + 256 + 512) + 4 * 256,
}


@pytest.mark.parametrize("arch,shape,norm", list(PARAMS))
@pytest.mark.slow
def test_exact_parameter_counts(arch, shape, norm):
    assert models.build(arch, shape, norm=norm).count_params() == PARAMS[(arch, shape, norm)]


def _sequence(model):
    return [type(lay).__name__ for lay in model.layers]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("norm", ["batch", "layer", "group", "rms"])
def test_norm_sits_between_linear_map_and_activation(arch, norm):
    m = models.build(arch, CIFAR, norm=norm)
    seq = _sequence(m)
    norm_cls = {"batch": "BatchNormalization", "layer": "LayerNormalization",
                "group": "GroupNormalization", "rms": "RMSNormalization"}[norm]
    n_linear = sum(t in ("Dense", "Conv2D") for t in seq) - 1  # all but the output layer
    positions = [i for i, t in enumerate(seq) if t == norm_cls]
    assert len(positions) == n_linear > 0
    for i in positions:
        assert seq[i - 1] in ("Dense", "Conv2D")
        assert seq[i + 1] == "Activation"
    assert seq[-1] == "Dense" and m.layers[-1].activation.__name__ == "softmax"


def test_no_norm_means_no_norm_layers_and_the_thesis_shapes():
    seq = _sequence(models.build("deep_cnn", CIFAR))
    assert seq.count("Conv2D") == 15 and seq.count("MaxPooling2D") == 5
    assert not any("Normalization" in t for t in seq)
    maps = [lay.filters for lay in models.build("deep_cnn", CIFAR).layers if isinstance(lay, layers.Conv2D)]
    assert maps == [32] * 3 + [64] * 3 + [128] * 3 + [256] * 3 + [512] * 3
    deep = models.build("deep_mlp", MNIST)
    assert [lay.units for lay in deep.layers if isinstance(lay, layers.Dense)] == [30] * 20 + [10]
    acts = {lay.activation.__name__ for lay in models.build("ioffe_mlp", MNIST).layers
            if isinstance(lay, layers.Activation)}
    assert acts == {"sigmoid"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [MNIST, CIFAR])
@pytest.mark.slow
def test_forward_pass_gives_class_probabilities(arch, shape):
    m = models.build(arch, shape, norm="batch")
    p = np.asarray(m(np.random.default_rng(0).random((2,) + shape, dtype=np.float32)))
    assert p.shape == (2, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_depth_width_activation_overrides():
    m = models.build("mlp", MNIST, norm="none", activation="tanh", depth=5, width=64)
    dense = [lay for lay in m.layers if isinstance(lay, layers.Dense)]
    assert [d.units for d in dense] == [64] * 5 + [10]
    assert {lay.activation.__name__ for lay in m.layers if isinstance(lay, layers.Activation)} == {"tanh"}
    assert models.build("cnn", MNIST, width=8).layers[1].filters == 8


def test_group_norm_groups_fit_the_layer():
    m = models.build("deep_mlp", MNIST, norm="group")
    groups = {lay.groups for lay in m.layers if isinstance(lay, layers.GroupNormalization)}
    assert groups == {6}  # 30 units: 6 groups of 5
    assert {lay.groups for lay in models.build("mlp", MNIST, norm="group").layers
            if isinstance(lay, layers.GroupNormalization)} == {5}


@pytest.mark.parametrize("kwargs,field", [({"arch": "vgg"}, "arch"), ({"norm": "weight"}, "norm"),
                                          ({"activation": "nope"}, "activation"), ({"depth": 0}, "depth")])
def test_bad_builder_options(kwargs, field):
    args = {"arch": "mlp", "input_shape": MNIST, **kwargs}
    with pytest.raises(ConfigError, match=field):
        models.build(**args)


def test_all_norms_listed_build():
    for norm in NORMS:
        models.build("mlp", MNIST, norm=norm)
