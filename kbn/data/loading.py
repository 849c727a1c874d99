"""Datasets as in-memory arrays, with the thesis's splits, prepared once and cached on disk.
It must not know models, training or Keras: arrays in, arrays out.

Splits (deterministic, no shuffling): the official training set is cut into train + validation, the
validation part being its last sixth (MNIST-like: 50k / 10k) or fifth (CIFAR-10: 40k / 10k); the
official test set is the test split. Pixels are float32 in [0, 1], shape (H, W, C); labels int32.

Sources, tried in order:
  1. the cache: `<KBN_DATA_DIR>/<name>.npz` (default `~/.cache/kbn/data`), uint8, loads in < 1 s;
  2. a local folder of the original files (kbn.data.files): IDX (`train-images-idx3-ubyte[.gz]` ...)
     for the MNIST-like sets, `cifar-10-batches-py` or `cifar-10-batches-bin` for CIFAR-10.
     `--data-dir`, else the Debian location (`apt-get install dataset-fashion-mnist` ->
     /usr/share/datasets/fashion-mnist);
  3. tensorflow-datasets (kbn.data.tfds), which downloads where there is a network.
Which datasets exist, their files, validation share and class count are kbn.core.registry's records.
Beyond them: `tfds:NAME` (any tensorflow-datasets image-classification set: its train split cut into
train + validation by registry.DEFAULT_VALIDATION_FRACTION, its test split, its class count from the
builder's info; cached like the built-ins) and `npz:PATH` (a file of x_train, y_train, x_test, y_test,
read each time; validation cut from train the same way). A variant `<prefix>_<dataset>` (e.g.
`cluttered_mnist`) is generated deterministically from its base by the function its registry.Variant
names (kbn.data.variants), and cached the same way.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from kbn.core import console, registry
from kbn.core.errors import ConfigError, DataError
from kbn.data import variants
from kbn.data.files import read_local, read_npz
from kbn.data.tfds import read_tfds


CACHE_VERSION = 1


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
    make = variants.MAKERS[registry.VARIANTS[prefix].make]
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
