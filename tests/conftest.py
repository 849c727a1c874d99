"""Shared fixtures: isolated cache, no network, tiny learnable data."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KBN_OFFLINE"] = "1"  # tests never touch the network
# compiled JAX steps shared by this session's tests, never the user's cache
os.environ.setdefault("KBN_JAX_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="kbn-jax-cache-"))

import numpy as np
import pytest

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path_factory.mktemp("kbn-cache")))
    monkeypatch.setenv("KBN_OFFLINE", "1")


def make_images(n, seed=0, shape=(28, 28, 1)):
    """Learnable images: class k lights a 4x4 block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = (rng.random((n,) + shape) * 60).astype(np.uint8)
    for i, k in enumerate(y):
        r, c = 2 + 6 * (k // 4), 2 + 6 * (k % 4)
        x[i, r : r + 4, c : c + 4, :] = 255
    return x, y


@pytest.fixture
def tiny_dataset():
    from kbn.data import Dataset

    parts = {}
    for split, n, seed in (("train", 512, 0), ("val", 128, 1), ("test", 128, 2)):
        x, y = make_images(n, seed)
        parts[f"x_{split}"] = x.astype(np.float32) / 255
        parts[f"y_{split}"] = y.astype(np.int32)
    return Dataset(name="fashion_mnist", source="generated", **parts)


TINY = """
name = "tiny"
datasets = ["mnist"]
archs = ["mlp"]
norms = ["none", "batch"]
optimizers = ["sgd"]
epochs = 1
seeds = [0, 1]
batch_size = 32
[search]
coarse = [0.01, 0.1, 1.0]
fine_per_side = 1
"""


def write_cache(name="mnist", inf_pixels=False):
    """A generated dataset in the kbn cache, so sweeps (and their subprocesses) load it by name."""
    from kbn import data

    arrays = {}
    for split, n, seed in (("train", 256, 0), ("val", 64, 1), ("test", 64, 2)):
        x, y = make_images(n, seed)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    data._write_cache(name, arrays, "generated")
    if inf_pixels:  # float32 inf after scaling: every training loss is NaN
        orig = data.load

        def load(*a, **k):
            ds = orig(*a, **k)
            ds.x_train[:] = np.inf
            return ds

        return load
    return None


@pytest.fixture
def tiny(tmp_path):
    write_cache()
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    return f
