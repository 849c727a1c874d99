"""Datasets as in-memory arrays, with the thesis's splits, prepared once and cached on disk.

Splits (deterministic, no shuffling): the official training set is cut into train + validation, the
validation part being its last sixth (MNIST-like: 50k / 10k) or fifth (CIFAR-10: 40k / 10k); the
official test set is the test split. Pixels are float32 in [0, 1], shape (H, W, C); labels int32.

Sources, tried in order:
  1. the cache: `<KBN_DATA_DIR>/<name>.npz` (default `~/.cache/kbn/data`), uint8, loads in < 1 s;
  2. a local folder of the original files: IDX (`train-images-idx3-ubyte[.gz]` ...) for the MNIST-like
     sets, `cifar-10-batches-py` or `cifar-10-batches-bin` for CIFAR-10. `--data-dir`, else the Debian
     location (`apt-get install dataset-fashion-mnist` -> /usr/share/datasets/fashion-mnist);
  3. tensorflow-datasets, which downloads where there is a network.
`cluttered_<base>` and `binary_<base>` are made deterministically from `<base>` and cached the same way.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import socket
import struct
import sys
import threading
from pathlib import Path

import numpy as np

from kbn.config import BASE_DATASETS, DATASETS, base_dataset, check_choice
from kbn.errors import ConfigError, DataError

CACHE_VERSION = 1
# Fraction of the official training set held out for validation: 10k of 60k, 10k of 50k.
VALIDATION_FRACTION = {"mnist": 1 / 6, "fashion_mnist": 1 / 6, "cifar10": 1 / 5}
DEBIAN_DIRS = {
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
    "cifar10": ["/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"],
}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Dataset:
    """One dataset in memory: float32 images in [0, 1] and int32 labels for each split."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {s: len(getattr(self, f"y_{s}")) for s in SPLITS}


def cache_dir() -> Path:
    if os.environ.get("KBN_DATA_DIR"):
        return Path(os.environ["KBN_DATA_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kbn" / "data"


# ---------------------------------------------------------------- readers of the original files


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 08 NDIM, then NDIM big-endian sizes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {data.size} bytes: truncated?")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx_folder(folder: Path) -> dict[str, np.ndarray] | None:
    """The four IDX files of an MNIST-like set, or None when the folder does not hold them."""
    found = {split: [_find(folder, stem) for stem in stems] for split, stems in IDX_FILES.items()}
    if any(p is None for paths in found.values() for p in paths):
        return None
    out = {}
    for split, (images, labels) in found.items():
        x = read_idx(images)
        out[f"x_{split}"] = x[..., None]  # (N, 28, 28, 1)
        out[f"y_{split}"] = read_idx(labels)
        if len(out[f"x_{split}"]) != len(out[f"y_{split}"]):
            raise DataError(f"{folder}: {images.name} and {labels.name} hold different numbers of examples")
    return out


def _cifar_pickle(p: Path):
    with open(p, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return np.asarray(d[b"data"], np.uint8), np.asarray(d[b"labels"], np.uint8)


def _cifar_bin(p: Path):
    rec = np.fromfile(p, dtype=np.uint8).reshape(-1, 1 + 3072)  # label byte, then 3x32x32 pixels
    return rec[:, 1:], rec[:, 0]


def read_cifar_folder(folder: Path) -> dict[str, np.ndarray] | None:
    """CIFAR-10's python pickles or binary batches (either the folder or its cifar-10-batches-* child)."""
    for cand in (folder, folder / "cifar-10-batches-py", folder / "cifar-10-batches-bin"):
        for suffix, reader in (("", _cifar_pickle), (".bin", _cifar_bin)):
            names = [f"data_batch_{i}{suffix}" for i in range(1, 6)] + [f"test_batch{suffix}"]
            if not all((cand / n).is_file() for n in names):
                continue
            parts = [reader(cand / n) for n in names]
            images = [x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) for x, _ in parts]  # to (N, H, W, C)
            return {
                "x_train": np.concatenate(images[:5]),
                "y_train": np.concatenate([y for _, y in parts[:5]]),
                "x_test": images[5],
                "y_test": parts[5][1],
            }
    return None


def read_local(name: str, folder: Path) -> dict[str, np.ndarray] | None:
    return read_cifar_folder(folder) if name == "cifar10" else read_idx_folder(folder)


# ---------------------------------------------------------------- tensorflow-datasets


def _network_ok(timeout: float = 3.0) -> bool:
    """KBN_OFFLINE=1: no; KBN_OFFLINE=0: yes; else a name lookup, bounded so an offline
    machine fails in seconds rather than letting tfds retry for minutes."""
    flag = (os.environ.get("KBN_OFFLINE") or "").strip()
    if flag:  # set but empty counts as unset: check, rather than wait for tfds's retries
        return flag in ("0", "false", "no")
    result = []

    def lookup():
        try:
            socket.getaddrinfo("storage.googleapis.com", 443)
            result.append(True)
        except OSError:
            pass

    t = threading.Thread(target=lookup, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result)


def read_tfds(name: str) -> tuple[dict[str, np.ndarray] | None, str]:
    """Arrays from tensorflow-datasets, or (None, why not)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - it is a dependency
        return None, f"tensorflow-datasets is not importable ({e})"
    tfds_dir = os.environ.get("TFDS_DATA_DIR")
    try:
        prepared = tfds.builder(name, data_dir=tfds_dir).is_prepared()
    except Exception:  # noqa: BLE001 - an unknown state means: try downloading
        prepared = False
    if not prepared and not _network_ok():
        return None, "tensorflow-datasets has no copy and there is no network to download one"
    arrays = {}
    try:
        splits = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=tfds_dir)
        # Batches, not batch_size=-1: under TF 2.21 a whole-split batch aborts the process
        # (std::length_error in vector::reserve).
        for split, ds in zip(("train", "test"), splits):
            xs, ys = zip(*tfds.as_numpy(ds.batch(10_000)))
            arrays[f"x_{split}"] = np.concatenate(xs).astype(np.uint8)
            arrays[f"y_{split}"] = np.concatenate(ys).astype(np.uint8)
    except Exception as e:  # noqa: BLE001 - any failure here means "this source is unavailable"
        first = str(e).splitlines()[0] if str(e) else ""
        return None, f"tensorflow-datasets failed: {type(e).__name__}: {first}"
    return arrays, "tfds"


# ---------------------------------------------------------------- splits, clutter, cache


def split_official(name: str, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut the official training set into train + validation (the last part), deterministically."""
    n = len(raw["y_train"])
    n_val = int(round(n * VALIDATION_FRACTION[name]))
    if n_val < 1 or n - n_val < 1:
        raise DataError(f"{name}: only {n} training examples, too few to hold out a validation split")
    return {
        "x_train": raw["x_train"][: n - n_val],
        "y_train": raw["y_train"][: n - n_val],
        "x_val": raw["x_train"][n - n_val :],
        "y_val": raw["y_train"][n - n_val :],
        "x_test": raw["x_test"],
        "y_test": raw["y_test"],
    }


def clutter(x: np.ndarray, seed: int, pieces: int = 8, piece: int = 8, margin: int = 32) -> np.ndarray:
    """Cluttered variant (as in Mnih et al.'s cluttered MNIST): each image pasted at a random place
    on a (H + margin)-square canvas, with `pieces` random piece x piece crops of other images of the
    same split scattered over it (pixel-wise maximum). Deterministic for a given seed."""
    n, h, w, c = x.shape
    size = max(h, w) + margin
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, c), dtype=np.uint8)
    obj_r = rng.integers(0, size - h + 1, n)
    obj_c = rng.integers(0, size - w + 1, n)
    src = rng.integers(0, n, (n, pieces))
    crop_r = rng.integers(0, h - piece + 1, (n, pieces))
    crop_c = rng.integers(0, w - piece + 1, (n, pieces))
    dst_r = rng.integers(0, size - piece + 1, (n, pieces))
    dst_c = rng.integers(0, size - piece + 1, (n, pieces))
    for k in range(pieces):
        for i in range(n):
            crop = x[src[i, k], crop_r[i, k] : crop_r[i, k] + piece, crop_c[i, k] : crop_c[i, k] + piece]
            region = out[i, dst_r[i, k] : dst_r[i, k] + piece, dst_c[i, k] : dst_c[i, k] + piece]
            np.maximum(region, crop, out=region)
    for i in range(n):
        region = out[i, obj_r[i] : obj_r[i] + h, obj_c[i] : obj_c[i] + w]
        np.maximum(region, x[i], out=region)
    return out


def binarise(x: np.ndarray) -> np.ndarray:
    """Binary images (Ioffe & Szegedy 2015, section 4.1): a pixel is on when it is > 0.5 after
    scaling to [0, 1], i.e. > 127.5 of 255; stored as 0 or 255, so `load` gives exactly 0.0 or 1.0."""
    return np.where(x > 127, np.uint8(255), np.uint8(0))


# How each variant is made from its base set's uint8 images: fn(images, split index) -> images.
VARIANT_MAKERS = {
    "cluttered": lambda x, i: clutter(x, seed=1000 + i),
    "binary": lambda x, i: binarise(x),
}


def _cache_path(name: str) -> Path:
    return cache_dir() / f"{name}.npz"


def _write_cache(name: str, arrays: dict[str, np.ndarray], source: str) -> Path:
    path = _cache_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"KBN_DATA_DIR: cannot use {str(path.parent)!r} as the data cache ({e.strerror}); "
                          "point it at a writable folder") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append ".npz"
        np.savez(f, version=np.array(CACHE_VERSION), source=np.array(source), **arrays)
    os.replace(tmp, path)  # atomic: a killed prepare never leaves a half-written cache
    return path


def _read_cache(name: str) -> tuple[dict[str, np.ndarray], str] | None:
    path = _cache_path(name)
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if int(z["version"]) != CACHE_VERSION:
                return None
            arrays = {f"{a}_{s}": z[f"{a}_{s}"] for s in SPLITS for a in ("x", "y")}
            return arrays, str(z["source"])
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
        return None


def _how_to_get(name: str, tried: list[str]) -> str:
    base = base_dataset(name)
    lines = [f"no data for {name!r}. Tried: " + "; ".join(tried) + ".", "Get it one of these ways:"]
    if base == "fashion_mnist":
        lines.append("  - apt-get install dataset-fashion-mnist   (Debian; kbn finds /usr/share/datasets/fashion-mnist)")
    if base == "cifar10":
        lines.append(
            "  - unpack cifar-10-python.tar.gz (or the binary version) and pass --data-dir to the folder "
            "holding cifar-10-batches-py/ (data_batch_1..5, test_batch)"
        )
    else:
        lines.append(
            "  - put the four original IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder and pass --data-dir FOLDER"
        )
    lines.append(f"  - on a machine with internet: kbn data prepare {name}   (tensorflow-datasets downloads it)")
    lines.append(f"Prepared data is cached in {cache_dir()} (set KBN_DATA_DIR to move it).")
    return "\n".join(lines)


def check_data_dir(data_dir: str | None) -> Path | None:
    if data_dir is None:
        return None
    p = Path(data_dir)
    if not p.is_dir() or not os.access(p, os.R_OK | os.X_OK):
        raise ConfigError(f"data_dir: cannot read folder {data_dir!r} (missing or not readable)")
    return p


def prepare(name: str, data_dir: str | None = None, verbose: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """uint8 arrays with splits for `name` (from the cache, else built and cached) and their source."""
    check_choice("dataset", name, DATASETS)
    folder = check_data_dir(data_dir)
    cached = _read_cache(name)
    if cached is not None:
        return cached
    base = base_dataset(name)
    if base != name:
        variant = name.removesuffix(f"_{base}")
        arrays, base_source = prepare(base, data_dir, verbose)
        if verbose:
            print(f"kbn: generating {name} from {base} (once; cached afterwards)", file=sys.stderr, flush=True)
        out = {}
        for i, split in enumerate(SPLITS):
            out[f"x_{split}"] = VARIANT_MAKERS[variant](arrays[f"x_{split}"], i)
            out[f"y_{split}"] = arrays[f"y_{split}"]
        source = f"{variant}({base_source})"
        _write_cache(name, out, source)
        return out, source
    assert name in BASE_DATASETS
    tried = [f"cache {_cache_path(name)} (absent)"]
    candidates = [folder] if folder else [Path(d) for d in DEBIAN_DIRS[name]]
    raw, source = None, None
    for cand in candidates:
        if cand.is_dir():
            raw = read_local(name, cand)
            if raw is not None:
                source = f"local:{cand}"
                break
        tried.append(f"folder {cand} (no {'CIFAR-10 batches' if name == 'cifar10' else 'IDX files'})")
    if raw is None:
        if verbose:
            print(f"kbn: {name}: trying tensorflow-datasets", file=sys.stderr, flush=True)
        raw, why = read_tfds(name)
        if raw is None:
            tried.append(why)
            raise DataError(_how_to_get(name, tried))
        source = why
    arrays = split_official(name, raw)
    path = _write_cache(name, arrays, source)
    if verbose:
        print(f"kbn: prepared {name} from {source}; cached at {path}", file=sys.stderr, flush=True)
    return arrays, source


def load(name: str, data_dir: str | None = None, subset: int | None = None, verbose: bool = True) -> Dataset:
    """The dataset in memory as float32 in [0, 1]; `subset` keeps the first N training examples."""
    arrays, source = prepare(name, data_dir, verbose)
    if subset is not None:
        n = len(arrays["y_train"])
        if subset > n:
            raise ConfigError(f"subset: {subset} is more than the {n} training examples of {name}")
        arrays = dict(arrays, x_train=arrays["x_train"][:subset], y_train=arrays["y_train"][:subset])
    scaled = {}
    for s in SPLITS:
        scaled[f"x_{s}"] = np.multiply(arrays[f"x_{s}"], np.float32(1 / 255), dtype=np.float32)
        scaled[f"y_{s}"] = arrays[f"y_{s}"].astype(np.int32)
    return Dataset(name=name, source=source, **scaled)
