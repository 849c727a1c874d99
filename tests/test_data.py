import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from kbn import data
from kbn.data import files, loading, variants
from kbn.core.errors import ConfigError, DataError


def test_read_idx_roundtrip_and_bad_magic(tmp_path, write_idx):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(files.read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="magic"):
        files.read_idx(tmp_path / "bad")


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_gives_thesis_split_then_loads_from_cache(tmp_path, compress, make_idx_folder):
    xtr, ytr, xte, yte = make_idx_folder(tmp_path / "raw", compress=compress)
    ds = data.load("mnist", data_dir=str(tmp_path / "raw"), verbose=False)
    # The last sixth of the official training set is validation (10k of 60k on the real set).
    assert ds.sizes() == {"train": 50, "validation": 10, "test": 12}
    assert ds.source == f"local:{tmp_path / 'raw'}"
    assert ds.x_train.dtype == np.float32 and ds.input_shape == (28, 28, 1)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    np.testing.assert_allclose(ds.x_validation, xtr[50:] / 255, atol=1e-6)
    np.testing.assert_array_equal(ds.y_test, yte)
    # Second time: from the cache, even without the folder.
    for p in (tmp_path / "raw").iterdir():
        p.unlink()
    again = data.load("mnist", verbose=False)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    assert (Path(os.environ["KBN_DATA_DIR"]) / "mnist.npz").is_file()


def test_subset_takes_the_first_training_examples(tmp_path, make_idx_folder):
    make_idx_folder(tmp_path / "raw")
    full = data.load("mnist", data_dir=str(tmp_path / "raw"), verbose=False)
    sub = data.load("mnist", subset=7, verbose=False)
    assert sub.sizes() == {"train": 7, "validation": 10, "test": 12}
    np.testing.assert_array_equal(sub.x_train, full.x_train[:7])
    with pytest.raises(ConfigError, match="subset"):
        data.load("mnist", subset=51, verbose=False)


def test_no_source_says_how_to_get_the_data(tmp_path, monkeypatch, debian_dirs):
    debian_dirs("fashion_mnist", [str(tmp_path / "nowhere")])
    with pytest.raises(DataError) as e:
        data.load("fashion_mnist", verbose=False)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-dir" in msg and "kbn data prepare fashion_mnist" in msg
    assert "no network" in msg


def test_unreadable_data_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data_dir"):
        data.load("mnist", data_dir=str(tmp_path / "missing"), verbose=False)


def _write_cifar_pickles(folder: Path, per_batch=10):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"labels": list(rng.integers(0, 10, per_batch))}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)


def test_cifar_python_batches_give_40k_10k_style_split(tmp_path):
    _write_cifar_pickles(tmp_path / "c" / "cifar-10-batches-py")
    ds = data.load("cifar10", data_dir=str(tmp_path / "c"), verbose=False)
    assert ds.sizes() == {"train": 40, "validation": 10, "test": 10}  # 40k / 10k / 10k on the real set
    assert ds.input_shape == (32, 32, 3)


@pytest.mark.parametrize("name,shape,n_train,n_val", [("mnist", (28, 28, 1), 50, 10), ("cifar10", (32, 32, 3), 48, 12)])
@pytest.mark.slow
def test_tfds_loader_with_mock_data(name, shape, n_train, n_val, monkeypatch, debian_dirs):
    import tensorflow_datasets as tfds

    monkeypatch.setenv("KBN_OFFLINE", "0")
    debian_dirs(name, [])
    with tfds.testing.mock_data(num_examples=60):
        ds = data.load(name, verbose=False)
    assert ds.source == "tfds"
    assert ds.sizes() == {"train": n_train, "validation": n_val, "test": 60}
    assert ds.input_shape == shape
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert set(np.unique(ds.y_train)) <= set(range(10))


def test_cluttered_variant_is_deterministic_and_keeps_labels(tmp_path, make_idx_folder):
    make_idx_folder(tmp_path / "raw")
    base = data.load("mnist", data_dir=str(tmp_path / "raw"), verbose=False)
    c1 = data.load("cluttered_mnist", verbose=False)
    assert c1.input_shape == (60, 60, 1)
    assert c1.sizes() == base.sizes()
    np.testing.assert_array_equal(c1.y_train, base.y_train)
    # every object pixel survives somewhere: the canvas holds at least as much ink as the digit
    assert (c1.x_train.sum(axis=(1, 2, 3)) >= base.x_train.sum(axis=(1, 2, 3)) - 1e-3).all()
    x = (base.x_train * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(variants.clutter(x, seed=5), variants.clutter(x, seed=5))
    assert not np.array_equal(variants.clutter(x, seed=5), variants.clutter(x, seed=6))


def test_real_fashion_mnist_from_the_debian_package(fashion_dir):
    ds = data.load("fashion_mnist", verbose=False)
    assert ds.sizes() == {"train": 50_000, "validation": 10_000, "test": 10_000}
    assert ds.source == f"local:{fashion_dir}"
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert np.bincount(np.concatenate([ds.y_train, ds.y_validation])).tolist() == [6000] * 10


def test_a_cache_prepared_before_the_split_was_called_validation_still_loads(make_images):
    """Caches keep the validation arrays under x_val / y_val, as kbn always wrote them: a cache
    prepared by an older kbn (as in /work/runs/cache) loads without being prepared again."""
    arrays = {}
    for split, key, n, seed in (("train", "train", 30, 0), ("validation", "val", 10, 1), ("test", "test", 12, 2)):
        arrays[f"x_{key}"], arrays[f"y_{key}"] = make_images(n, seed)
    path = data.cache_path("mnist")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, version=np.array(loading.CACHE_VERSION), source=np.array("an older kbn"), **arrays)
    ds = data.load("mnist", verbose=False)
    assert ds.source == "an older kbn" and ds.sizes() == {"train": 30, "validation": 10, "test": 12}
    np.testing.assert_array_equal(ds.y_validation, arrays["y_val"])
    data.write_cache("mnist", {f"{a}_{s}": getattr(ds, f"{a}_{s}") for s in data.SPLITS for a in "xy"}, "again")
    with np.load(path) as z:
        assert {"x_val", "y_val"} <= set(z.files) and "x_validation" not in z.files


def test_every_variant_the_registry_names_has_its_function():
    from kbn.core import registry

    assert {v.make for v in registry.VARIANTS.values()} == set(variants.MAKERS)
    assert all(callable(f) for f in variants.MAKERS.values())
