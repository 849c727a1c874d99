"""Shared fixtures: isolated cache, no network, tiny learnable data."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KBN_OFFLINE"] = "1"  # tests never touch the network
# compiled JAX steps shared by this session's tests, never the user's cache
os.environ.setdefault("KBN_JAX_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="kbn-jax-cache-"))

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def debian_dirs(monkeypatch):
    """`debian_dirs(name, folders)`: where kbn looks for a built-in dataset's Debian package, for one test."""
    import dataclasses
    from types import MappingProxyType

    from kbn import registry

    def set_dirs(name, folders):
        rec = dataclasses.replace(registry.DATASETS[name], debian_dirs=tuple(str(f) for f in folders))
        datasets = MappingProxyType({**registry.DATASETS, name: rec})
        monkeypatch.setattr(registry, "DATASETS", datasets)
        monkeypatch.setattr(registry, "REGISTRIES", MappingProxyType({**registry.REGISTRIES, "dataset": datasets}))

    return set_dirs


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


@pytest.fixture(scope="session")
def finished_tiny_sweep(tmp_path_factory):
    """A real 2-cell sweep (TINY: none and batch, 2 seeds, 1 epoch; ~20 s), run once per test session,
    for tests that only read a finished sweep's folder."""
    from kbn.config import load_sweep
    from kbn.tune import run_sweep

    root = tmp_path_factory.mktemp("finished-tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KBN_DATA_DIR", str(root / "cache"))
        write_cache()
        (root / "tiny.toml").write_text(TINY)
        assert run_sweep(load_sweep(root / "tiny.toml"), root / "out", log=lambda *_: None) == 0
    return root / "out"


def write_idx(path, arr, compress=True):
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def make_idx_folder(folder: Path, n_train=60, n_test=12, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr = make_images(n_train, 0)
    xte, yte = make_images(n_test, 1)
    sfx = ".gz" if compress else ""
    write_idx(folder / f"train-images-idx3-ubyte{sfx}", xtr[..., 0], compress)
    write_idx(folder / f"train-labels-idx1-ubyte{sfx}", ytr, compress)
    write_idx(folder / f"t10k-images-idx3-ubyte{sfx}", xte[..., 0], compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", yte, compress)
    return xtr, ytr, xte, yte
