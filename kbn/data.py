"""Datasets as in-memory arrays, with the thesis's splits, prepared once and cached on disk.
It must not know models, training or Keras: arrays in, arrays out.

Splits (deterministic, no shuffling): the official training set is cut into train + validation, the
validation part being its last sixth (MNIST-like: 50k / 10k) or fifth (CIFAR-10: 40k / 10k); the
official test set is the test split. Pixels are float32 in [0, 1], shape (H, W, C); labels int32.

Sources, tried in order:
  1. the cache: `<KBN_DATA_DIR>/<name>.npz` (default `~/.cache/kbn/data`), uint8, loads in < 1 s;
  2. a local folder of the original files: IDX (`train-images-idx3-ubyte[.gz]` ...) for the MNIST-like
     sets, `cifar-10-batches-py` or `cifar-10-batches-bin` for CIFAR-10. `--data-dir`, else the Debian
     location (`apt-get install dataset-fashion-mnist` -> /usr/share/datasets/fashion-mnist);
  3. tensorflow-datasets, which downloads where there is a network.
Which datasets exist, their files, validation share and class count are kbn.registry's records.
Beyond them: `tfds:NAME` (any tensorflow-datasets image-classification set: its train split cut into
train + validation by registry.DEFAULT_VALIDATION_FRACTION, its test split, its class count from the
builder's info; cached like the built-ins) and `npz:PATH` (a file of x_train, y_train, x_test, y_test,
read each time; validation cut from train the same way). A variant `<prefix>_<dataset>` (e.g.
`cluttered_mnist`) is generated deterministically from its base by the function its registry.Variant
names, and cached the same way.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import re
import socket
import struct
import threading
from pathlib import Path

import numpy as np

from kbn import console, registry
from kbn.errors import ConfigError, DataError, DataFileError

CACHE_VERSION = 1
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = ("train", "validation", "test")
# The cache files' names of the validation arrays, from before the split was called `validation`
# everywhere; kept, so that caches already prepared load as they are.
_CACHE_KEYS = {"x_validation": "x_val", "y_validation": "y_val"}


@dataclasses.dataclass
class Dataset:
    """One dataset in memory: float32 images in [0, 1] and int32 labels for each split."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_validation: np.ndarray
    y_validation: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    num_classes: int = 10
    validation_fraction: float | None = None  # of the official training set, held out for validation

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


READERS = {"idx": read_idx_folder, "cifar": read_cifar_folder}  # registry.Dataset.reader -> function


def read_local(name: str, folder: Path) -> dict[str, np.ndarray] | None:
    return READERS[registry.get("dataset", name).reader](folder)


def read_npz(path: str) -> dict[str, np.ndarray]:
    """A dataset of one's own: x_train, y_train, x_test, y_test (images (N, H, W[, C]), integer labels);
    DataFileError, one line naming the file and the array, for anything that cannot be a dataset."""
    def bad(what):
        return DataFileError(f"dataset npz:{path}: {what}")

    try:
        z = np.load(path)
    except (OSError, ValueError, EOFError) as e:
        raise bad(f"cannot read it as .npz arrays ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise bad(f"not an .npz archive (a single {type(z).__name__} array: a .npy file?); write one with "
                  "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    try:
        with z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise bad(f"holds {', '.join(z.files)}; missing {', '.join(missing)} (give x_train, y_train, x_test, y_test)")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, EOFError) as e:
        raise bad(f"cannot read it as .npz arrays ({e})") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 3:
            arrays[f"x_{split}"] = x = x[..., None]
        if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise bad(f"x_{split} {x.shape} and y_{split} {y.shape} {y.dtype}: give images (N, H, W[, C]) and N "
                      "non-negative integer labels")
        if len(y) == 0:
            raise bad(f"x_{split} {x.shape} has no examples; give at least one image in x_{split} and y_{split}")
        if y.min() < 0:
            raise bad(f"y_{split} holds the label {y.min()}; give non-negative integer labels")
        if x.dtype != np.uint8:
            nan = np.flatnonzero(np.isnan(x).reshape(len(x), -1).any(axis=1)) if x.dtype.kind == "f" else []
            if len(nan):  # a cast would make them 0, black pixels that were never there
                raise ConfigError(f"dataset npz:{path}: x_{split} holds {int(np.isnan(x).sum())} NaN pixels (the "
                                  f"first in example {nan[0]}); give finite pixels")
            if x.min() < 0 or x.max() > 1:
                raise bad(f"x_{split} is {x.dtype} outside [0, 1]; give uint8 pixels or floats in [0, 1]")
            arrays[f"x_{split}"] = np.round(x * 255).astype(np.uint8)
    train, test = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train != test:
        raise bad(f"x_train images are {train} (height, width, channels) but x_test images are {test}; give "
                  "both splits images of one shape")
    _check_labels(path, arrays["y_train"], arrays["y_test"])
    return arrays


def _check_labels(path: str, y_train: np.ndarray, y_test: np.ndarray) -> None:
    """An npz file's class count is its largest label + 1: every class 0..K-1 must have training
    examples, or the network gets outputs for classes that do not exist (chance 1/501 for labels
    0..9 and one 500) and the test set classes it never saw."""
    seen = np.unique(y_train)
    if len(seen) < 2:
        raise ConfigError(f"dataset npz:{path}: y_train holds one label ({seen[0]}): a classifier needs two classes "
                          "or more")
    unseen = np.flatnonzero(~np.isin(y_test, seen))
    if len(unseen):
        raise ConfigError(f"dataset npz:{path}: y_test holds label {y_test[unseen[0]]} (example {unseen[0]}), which no "
                          f"training example has ({len(unseen)} test example(s) so); number the classes 0..K−1, "
                          "each with training examples")
    k = int(seen[-1]) + 1
    if len(seen) < k:
        missing = np.setdiff1d(np.arange(k), seen)
        raise ConfigError(f"dataset npz:{path}: labels run up to {k - 1} ({k} classes) but no training example has "
                          f"{_spans(missing)}; number the classes 0..K−1, each with training examples")


def _spans(values: np.ndarray) -> str:
    """Sorted whole numbers as '3, 5–9' (at most 5 parts)."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}–{values[j]}")
        i = j + 1
    return ", ".join(parts[:5]) + (f" and {len(parts) - 5} more" if len(parts) > 5 else "")


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
    """Arrays from tensorflow-datasets (with `num_classes` from the builder's info), or (None, why not)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # an extra: kbn[tfds]
        return None, f"tensorflow-datasets is not importable ({e}; pip install 'kbn[tfds]')"
    tfds_dir = os.environ.get("TFDS_DATA_DIR")
    try:
        prepared = tfds.builder(name, data_dir=tfds_dir).is_prepared()
    except Exception:  # noqa: BLE001 - an unknown state means: try downloading
        prepared = False
    if not prepared and not _network_ok():
        return None, "tensorflow-datasets has no copy and there is no network to download one"
    arrays = {}
    try:
        splits, info = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=tfds_dir, with_info=True)
        label = info.features[info.supervised_keys[1]]
        if not hasattr(label, "num_classes"):
            return None, f"tensorflow-datasets: {name} has no class labels ({type(label).__name__})"
        arrays["num_classes"] = np.array(label.num_classes)
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
    """Cut the official training set into train + validation (the last part, the share the registry
    gives), deterministically."""
    n = len(raw["y_train"])
    n_val = int(round(n * registry.get("dataset", name).validation_fraction))
    if n_val < 1 or n - n_val < 1:
        raise DataError(f"{name}: only {n} training examples, too few to hold out a validation split")
    return {
        "x_train": raw["x_train"][: n - n_val],
        "y_train": raw["y_train"][: n - n_val],
        "x_validation": raw["x_train"][n - n_val :],
        "y_validation": raw["y_train"][n - n_val :],
        "x_test": raw["x_test"],
        "y_test": raw["y_test"],
        "num_classes": np.array(_classes(name, raw)),
    }


def _classes(name: str, raw: dict) -> int:
    """The registry's class count, else the source's (tfds's info), else the largest label + 1."""
    known = registry.get("dataset", name).classes or raw.get("num_classes")
    return int(known) if known is not None else int(max(raw["y_train"].max(), raw["y_test"].max())) + 1


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


def binarise(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Binary images (Ioffe & Szegedy 2015, section 4.1): a pixel is on when it is > 0.5 after
    scaling to [0, 1], i.e. > 127.5 of 255; stored as 0 or 255, so `load` gives exactly 0.0 or 1.0.
    (`seed` is unused: a variant's function takes one.)"""
    return np.where(x > 127, np.uint8(255), np.uint8(0))


def cache_path(name: str) -> Path:
    """The cache file of `name`. A variant of an npz file is keyed by the file's sha256, so a changed
    file is never shadowed by the copy made from its old contents."""
    stem = re.sub(r"[^\w.]", "_", name)
    prefixes, base = registry.split_variant(name)
    if prefixes and base.startswith("npz:"):
        sha = registry.file_hash(Path(base[4:]))
        stem += f"-{sha[:16]}" if sha else ""
    return cache_dir() / (stem + ".npz")


def write_cache(name: str, arrays: dict[str, np.ndarray], source: str) -> Path:
    """Store a dataset's splits (uint8 images x_<split> and labels y_<split> for each of SPLITS, and
    optionally num_classes) in the cache as `name`: `load(name)` then reads them (`kbn data prepare`
    writes its datasets so; tests write generated ones). `source` is what runs record as its origin."""
    path = cache_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"KBN_DATA_DIR: cannot use {str(path.parent)!r} as the data cache ({e.strerror}); "
                          "point it at a writable folder") from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append ".npz"
        np.savez(f, version=np.array(CACHE_VERSION), source=np.array(source),
                 **{_CACHE_KEYS.get(k, k): v for k, v in arrays.items()})
    os.replace(tmp, path)  # atomic: a killed prepare never leaves a half-written cache
    return path


def _read_cache(name: str) -> tuple[dict[str, np.ndarray], str] | None:
    path = cache_path(name)
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if int(z["version"]) != CACHE_VERSION:
                return None
            arrays = {f"{a}_{s}": z[_CACHE_KEYS.get(f"{a}_{s}", f"{a}_{s}")] for s in SPLITS for a in ("x", "y")}
            if "num_classes" in z.files:
                arrays["num_classes"] = z["num_classes"]
            return arrays, str(z["source"])
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
        return None


def _how_to_get(name: str, tried: list[str]) -> str:
    rec = registry.get("dataset", name)
    lines = [f"no data for {name!r}. Tried: " + "; ".join(tried) + ".", "Get it one of these ways:"]
    if rec.debian_package:
        lines.append(f"  - apt-get install {rec.debian_package}   (Debian; kbn finds {rec.debian_dirs[0]})")
    if rec.reader:
        lines.append(f"  - {registry.READER_HOW[rec.reader]}")
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
    """uint8 arrays with splits for `name` (from the cache, else built and cached) and their source;
    `num_classes` among them."""
    rec = registry.get("dataset", name)
    folder = check_data_dir(data_dir)
    if rec.npz:  # a file of one's own: read each time, so a changed file is never shadowed by a cache
        variants, _ = registry.split_variant(name)
        if not variants:
            return split_official(name, read_npz(rec.npz)), f"npz:{Path(rec.npz).resolve()}"
    cached = _read_cache(name)
    if cached is not None:
        return cached
    variants, _ = registry.split_variant(name)
    if variants:
        return _make_variant(name, variants[0], data_dir, verbose)
    tried = [f"cache {cache_path(name)} (absent)"]
    raw, source = None, None
    candidates = [folder] if folder else [Path(d) for d in rec.debian_dirs]
    for cand in candidates if rec.reader else []:
        if cand.is_dir():
            raw = read_local(name, cand)
            if raw is not None:
                source = f"local:{cand}"
                break
        tried.append(f"folder {cand} (no {'CIFAR-10 batches' if rec.reader == 'cifar' else 'IDX files'})")
    if raw is None:
        if verbose:
            console.note(f"kbn: {name}: trying tensorflow-datasets")
        raw, why = read_tfds(rec.tfds or name)
        if raw is None:
            tried.append(why)
            raise DataError(_how_to_get(name, tried))
        source = why
    arrays = split_official(name, raw)
    path = write_cache(name, arrays, source)
    if verbose:
        console.note(f"kbn: prepared {name} from {source}; cached at {path}")
    return arrays, source


def _make_variant(name: str, prefix: str, data_dir, verbose: bool):
    """`<prefix>_<base>`: the variant's function applied to each split of the base (seeds 1000, 1001,
    1002 for train, validation, test), labels kept; cached."""
    base = name[len(prefix) + 1:]
    arrays, base_source = prepare(base, data_dir, verbose)
    if verbose:
        console.note(f"kbn: generating {name} from {base} (once; cached afterwards)")
    make = globals()[registry.VARIANTS[prefix].make]
    out = {"num_classes": arrays["num_classes"]} if "num_classes" in arrays else {}
    for i, split in enumerate(SPLITS):
        out[f"x_{split}"] = make(arrays[f"x_{split}"], seed=1000 + i)
        out[f"y_{split}"] = arrays[f"y_{split}"]
    source = f"{prefix}({base_source})"
    write_cache(name, out, source)
    return out, source


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
    classes = int(arrays["num_classes"]) if "num_classes" in arrays else _classes(name, arrays)
    return Dataset(name=name, source=source, num_classes=classes,
                   validation_fraction=registry.get("dataset", name).validation_fraction, **scaled)
