"""Readers of a dataset's original files: IDX (the MNIST-like sets, `.gz` or not), CIFAR-10's
batches (Python pickles or binary), and a researcher's own `npz:PATH` file, checked as it is read.
Arrays out, uint8 images and their labels; no splits, no cache (kbn.data.loading's).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from kbn.core import registry
from kbn.core.errors import ConfigError, DataError, DataFileError


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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
