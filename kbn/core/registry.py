"""Every component kbn knows, one registry per kind: optimizers, norms, architectures, datasets.
It must not import Keras at load (import strings resolve on use) nor know how a run trains.

Each entry is one frozen record holding every fact kbn needs about it (how to make it, how tables
name it, how packing treats it, ...). Adding a built-in is one record here; every other module derives
its lists from these registries (tests/test_registry.py fails when one keeps its own).

Wherever kbn accepts a name (CLI options, sweep files) it also accepts a researcher's own component:
  - an import string `package.module:attr` for an optimizer (a Keras optimizer class, or a factory
    taking the learning rate), a network (a builder taking input_shape, num_classes, norm, activation
    that places norms with kbn.models.norm_layer / dense_block) or a norm (a Keras layer class);
  - `tfds:NAME` (a tensorflow-datasets image-classification set) or `npz:PATH` (x_train, y_train,
    x_test, y_test) for a dataset, and `<variant>_<dataset>` for a variant of any dataset.
An import string is checked for its syntax when a sweep or run is read, and imported only before
training (`resolve`), because the Keras backend is chosen from the names before Keras is imported.
The current folder is put on the import path first, as web servers do for `module:app` strings.

A user optimizer's family (for the findings' "plain vs adaptive" claim) is "adaptive" unless the
class or factory says otherwise with an attribute `kbn_family = "plain"`; `kbn_name` sets its
display name (default: the attribute's name).

This module must not import Keras at import time: kbn.core.config reads it before the backend is chosen.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from kbn.core import compat, contracts
from kbn.core.errors import ConfigError

KINDS = ("optimizer", "norm", "arch", "dataset")
FAMILIES = ("plain", "adaptive")
_IMPORT = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


# ---------------------------------------------------------------- import strings


def is_import_string(name: str) -> bool:
    return isinstance(name, str) and bool(_IMPORT.match(name))


def slug(name: str) -> str:
    """The short form of a name in run folders and cell keys: built-in names as they are, an import
    string's attribute (`mylab.opt:Lion` -> Lion), a dataset file's stem, a tfds name. Never holds
    '-' (the separator of run names) or '/'."""
    for prefix, strip in (("npz:", lambda s: Path(s).stem), ("tfds:", lambda s: s)):
        head, sep, rest = name.rpartition(prefix)
        if sep and (not head or head.endswith("_")):
            name = head + strip(rest)
    if is_import_string(name):
        name = name.rpartition(":")[2].rpartition(".")[2]
    return re.sub(r"[^A-Za-z0-9_.]", "_", name)


def _add_cwd_to_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_object(field: str, spec: str) -> tuple[Any, Path | None]:
    """The object an import string names, and its module's file; one line naming the string, the
    module tried and what was found when it cannot be had."""
    module_name, _, attr = spec.partition(":")
    _add_cwd_to_path()
    try:
        module = importlib.import_module(module_name)
    except SystemExit as e:  # a script's exit, run at import: kbn would end with its code and no word
        raise ConfigError(f"{field}: {spec!r}: importing module {module_name!r} called sys.exit({e.code!r}); a module "
                          "kbn imports must not exit (put its script part under `if __name__ == \"__main__\":`)") \
            from None
    except ModuleNotFoundError as e:
        if e.name and not (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(f"{field}: {spec!r}: importing module {module_name!r} failed: it imports {e.name!r}, "
                              f"which is not installed ({e}); install it, or fix that import in "
                              f"{_module_file(module_name)}") from None
        raise ConfigError(f"{field}: {spec!r}: cannot import module {module_name!r} ({e}); put it on PYTHONPATH "
                          f"or run kbn from the folder that holds it (tried {os.getcwd()} and sys.path)") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing: say how
        raise ConfigError(f"{field}: {spec!r}: importing module {module_name!r} failed: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    file = Path(module.__file__) if getattr(module, "__file__", None) else None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = f" ({file})" if file else ""
            raise ConfigError(f"{field}: {spec!r}: module {module_name!r}{where} has no attribute {attr!r}; "
                              f"it has: {', '.join(n for n in dir(module) if not n.startswith('_'))[:200]}")
        obj = getattr(obj, part)
    return obj, file


def _module_file(module_name: str) -> str:
    """Where a module that failed to import lives, without importing it again."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    return spec.origin if spec is not None and spec.origin else f"module {module_name!r}"


def file_hash(path: Path | None) -> str | None:
    """sha256 of a file (a module, a dataset); kept per (path, size, mtime): a sweep asks per trial."""
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return _hash(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _hash(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def failure(field: str, spec: str, doing: str, e: BaseException) -> ConfigError:
    """A user's component raised while kbn used it: one line naming the import string, what kbn was
    doing and the exception's own message (under the lines Keras wraps a layer's failure in)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(e).splitlines()]
    lines = [ln for ln in lines if ln]
    after = [ln for i, ln in enumerate(lines) if i and lines[i - 1].endswith("Error encountered:")]
    msg = (after or lines or [""])[0]
    return ConfigError(f"{field}: {spec!r} failed {doing}: {type(e).__name__}: {msg}")


def _what(obj) -> str:
    if inspect.isclass(obj):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if callable(obj):
        return f"function {getattr(obj, '__qualname__', obj)!s}"
    return f"{type(obj).__name__} {obj!r:.40}"


# ---------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optimizer: `keras_class` (a name in keras.optimizers) with `fixed` arguments that define the
    method, or a user's class/factory (`source`, an import string)."""

    name: str
    display: str
    family: str  # "plain" (SGD and its momentum forms) or "adaptive" (per-parameter scaling)
    keras_class: str | None = None
    fixed: tuple[tuple[str, Any], ...] = ()  # (argument, value) pairs
    source: str | None = None

    def resolve(self, field: str = "optimizer") -> Callable:
        """The class (or factory) to call with learning_rate=..."""
        if self.source is None:
            import keras

            return getattr(keras.optimizers, self.keras_class)
        import keras

        obj, _ = import_object(field, self.source)
        is_class = inspect.isclass(obj)
        if not callable(obj) or (is_class and not issubclass(obj, keras.optimizers.Optimizer)):
            raise ConfigError(f"{field}: {self.source!r} names {_what(obj)}, not a Keras optimizer class or a factory "
                              "taking the learning rate")
        if why := contracts.unfit(obj, contracts.OptimizerFactory):
            raise ConfigError(f"{field}: {self.source!r} {why}")
        return obj

    def make(self, lr: float, field: str = "optimizer", **overrides):
        import keras

        made_by = self.resolve(field)
        try:
            if self.source is None or inspect.isclass(made_by):
                opt = made_by(**{**dict(self.fixed), **overrides, "learning_rate": lr})
            else:  # a factory: the learning rate first
                opt = made_by(lr, **overrides)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{field} {self.name}: cannot make it with learning rate {lr}"
                              f"{f' and {sorted(overrides)}' if overrides else ''}: {e}") from None
        except Exception as e:  # a user's optimizer raised: their error, named
            if self.source is None:
                raise
            raise failure(field, self.source, f"making the optimizer at learning rate {lr}", e) from None
        if not isinstance(opt, keras.optimizers.Optimizer):
            raise ConfigError(f"{field}: {self.name!r} returned {_what(opt)}, not a keras.optimizers.Optimizer")
        self.rate_verified(opt, lr, field)
        return opt

    def rate_verified(self, opt, lr: float, field: str = "optimizer") -> bool:
        """Whether the optimizer made for `lr` is known to use it: True when its learning rate reads as
        `lr`; False when it cannot be read (a schedule, a rate of its own making): runs record the
        rate they asked for, which kbn then cannot vouch for. A rate that reads otherwise (a factory
        ignoring its argument) is an error: every number of the run would be filed under a rate
        never used."""
        import keras

        rate = compat.optimizer_lr_variable(opt)
        if not isinstance(rate, keras.Variable):
            return False
        used = float(keras.ops.convert_to_numpy(rate))
        if abs(used - lr) > 1e-6 * abs(lr):  # float32's rounding of the rate passes
            raise ConfigError(f"{field}: {self.name!r} made an optimizer whose learning rate is {used:.6g} when "
                              f"asked for {lr:g}; pass the rate it is given on to the optimizer")
        return True

    @property
    def packable(self) -> bool:
        """Packed trials hand every update a per-trial learning-rate array: kbn knows that its own
        optimizers use the rate linearly; a user's may not."""
        return self.source is None


@dataclasses.dataclass(frozen=True)
class Norm:
    """A normalization: `layer` (a name in keras.layers, or a user's class via `source`), its colour in
    the plots. Packing rules are keyed by the layer's type in kbn.models.packed."""

    name: str
    display: str
    color: str
    layer: str | None = None  # None: no norm
    grouped: bool = False  # the layer takes groups=: up to 8 groups of at least 4 channels
    source: str | None = None
    # BatchNormalization's moving-average momentum (Keras's default, stated: it is the "moving" rule
    # of config.BN_STATISTICS, and a report's protocol line says it)
    momentum: float | None = None

    def resolve(self, field: str = "norm"):
        import keras

        if self.layer is None and self.source is None:
            return None
        if self.source is None:
            return getattr(keras.layers, self.layer)
        obj, _ = import_object(field, self.source)
        if not (inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)):
            raise ConfigError(f"{field}: {self.source!r} names {_what(obj)}, not a Keras layer class")
        if why := contracts.unfit(obj, contracts.NormLayerClass):
            raise ConfigError(f"{field}: {self.source!r} {why}")
        return obj

    def make(self, channels: int, name: str):
        cls = self.resolve()
        if cls is None:
            return None
        kwargs = {"name": name} if self.momentum is None else {"momentum": self.momentum, "name": name}
        if self.grouped:
            kwargs["groups"] = max(g for g in range(1, 9) if g == 1 or (channels % g == 0 and channels // g >= 4))
        if self.source is None:
            return cls(**kwargs)
        try:
            return cls(**kwargs)
        except Exception as e:  # noqa: BLE001 - a user's norm class that cannot be made as kbn makes norms
            raise failure("norm", self.source, f"as {cls.__name__}({', '.join(f'{k}=...' for k in kwargs)}) "
                          "(kbn makes a norm layer with these arguments only)", e) from None


@dataclasses.dataclass(frozen=True)
class Arch:
    """A network: its builder (a function in kbn.models, or a user's via `source`), whether it is
    convolutional (TensorFlow runs those faster on CPU), whether kbn can pack it, and its deeper twin
    (the thesis compares each shallow network with its deep version)."""

    name: str
    display: str
    builder: str | None = None
    conv: bool = False
    packable: bool = True
    deep: str | None = None
    source: str | None = None

    def resolve(self, field: str = "arch") -> Callable:
        """A user's builder (`source`); kbn's own are kbn.models' to look up (`models.builder`): the
        registry sits below the networks and never imports them."""
        if self.source is None:
            raise ConfigError(f"{field}: {self.name!r} is kbn's own network: kbn.models.builder builds it")
        obj, _ = import_object(field, self.source)
        if not callable(obj) or inspect.isclass(obj):
            raise ConfigError(f"{field}: {self.source!r} names {_what(obj)}, not a builder function "
                              "(input_shape, num_classes, norm, activation) -> keras.Model")
        if why := contracts.unfit(obj, contracts.NetworkBuilder):
            raise ConfigError(f"{field}: {self.source!r} {why}")
        return obj


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset: where its original files are (Debian folders, the reader of their format), how much
    of the training set is held out for validation, its class count (None: read from the data) and
    display name. `tfds`: the tensorflow-datasets name; `npz`: a file of arrays."""

    name: str
    display: str
    validation_fraction: float = 1 / 6
    classes: int | None = None
    reader: str | None = None  # "idx" or "cifar": the original files' format
    debian_dirs: tuple[str, ...] = ()
    debian_package: str | None = None
    tfds: str | None = None
    npz: str | None = None


@dataclasses.dataclass(frozen=True)
class Variant:
    """A dataset made from another by a deterministic function of kbn.data.variants (`<prefix>_<base>`)."""

    prefix: str
    display: str  # "{}" is the base's display name
    make: str  # its function's name in kbn.data.variants.MAKERS: (arrays of one split, seed) -> arrays


def _records(*recs) -> MappingProxyType:
    return MappingProxyType({r.name: r for r in recs})


def _fixed(**kw) -> tuple:
    return tuple(kw.items())


OPTIMIZERS = _records(
    Optimizer("sgd", "SGD", "plain", "SGD"),
    Optimizer("sgdm", "SGDm", "plain", "SGD", _fixed(momentum=0.9)),
    Optimizer("nesterov", "Nesterov", "plain", "SGD", _fixed(momentum=0.9, nesterov=True)),
    Optimizer("adam", "Adam", "adaptive", "Adam"),
    Optimizer("adamw", "AdamW", "adaptive", "AdamW"),
    Optimizer("nadam", "Nadam", "adaptive", "Nadam"),
    Optimizer("adagrad", "Adagrad", "adaptive", "Adagrad"),
    Optimizer("adadelta", "Adadelta", "adaptive", "Adadelta"),
    Optimizer("rmsprop", "RMSprop", "adaptive", "RMSprop"),
)
NORMS = _records(
    Norm("none", "none", "tab:gray"),
    Norm("batch", "batch", "tab:blue", "BatchNormalization", momentum=0.99),
    Norm("layer", "layer", "tab:orange", "LayerNormalization"),
    Norm("group", "group", "tab:green", "GroupNormalization", grouped=True),
    Norm("rms", "rms", "tab:red", "RMSNormalization"),
)
ARCHS = _records(
    Arch("mlp", "MLP", "mlp", deep="deep_mlp"),
    Arch("cnn", "CNN", "cnn", conv=True, deep="deep_cnn"),
    Arch("deep_mlp", "deep MLP", "deep_mlp"),
    Arch("deep_cnn", "deep CNN", "deep_cnn", conv=True),
    Arch("ioffe_mlp", "Ioffe MLP", "ioffe_mlp"),
)
DEEP_TWINS = MappingProxyType({name: rec.deep for name, rec in ARCHS.items() if rec.deep})  # shallow -> deep
_IDX_HOW = ("put the four original IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder and pass --data-dir FOLDER")
DATASETS = _records(
    Dataset("mnist", "MNIST", 1 / 6, 10, "idx", ("/usr/share/datasets/mnist",)),
    Dataset("fashion_mnist", "Fashion-MNIST", 1 / 6, 10, "idx", ("/usr/share/datasets/fashion-mnist",),
            debian_package="dataset-fashion-mnist"),
    Dataset("cifar10", "CIFAR-10", 1 / 5, 10, "cifar", ("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10")),
)
# How to get each reader's files by hand (kbn data prepare says it when no source has the data).
READER_HOW = MappingProxyType({
    "idx": _IDX_HOW,
    "cifar": ("unpack cifar-10-python.tar.gz (or the binary version) and pass --data-dir to the folder holding "
              "cifar-10-batches-py/ (data_batch_1..5, test_batch)"),
})
VARIANTS = MappingProxyType({v.prefix: v for v in (
    Variant("cluttered", "cluttered {}", "clutter"),
    # Ioffe & Szegedy (2015) section 4.1's 28x28 binary images: pixels > 0.5 after scaling to [0, 1].
    Variant("binary", "binary {}", "binarise"),
)})
# Validation share cut from a tfds: or npz: dataset's training set (as MNIST's 10k of 60k).
DEFAULT_VALIDATION_FRACTION = 1 / 6
REGISTRIES = MappingProxyType({"optimizer": OPTIMIZERS, "norm": NORMS, "arch": ARCHS, "dataset": DATASETS})


# ---------------------------------------------------------------- names -> records


def _choices(kind: str) -> str:
    names = list(REGISTRIES[kind])
    if kind == "dataset":
        names += [f"{p}_<dataset>" for p in VARIANTS] + ["tfds:NAME", "npz:PATH"]
        return ", ".join(names)
    return ", ".join(names) + ", or an import string package.module:attr"


def split_variant(name: str) -> tuple[list[str], str]:
    """(variant prefixes, outermost first; the base dataset name)."""
    prefixes = []
    while True:
        head, sep, rest = name.partition("_")
        if sep and head in VARIANTS and rest and not name.startswith(("tfds:", "npz:")):
            prefixes.append(head)
            name = rest
        else:
            return prefixes, name


def check(kind: str, value, field: str | None = None) -> str:
    """`value` if it names a registered component of `kind` or is well-formed (an import string,
    tfds:NAME, npz:PATH): nothing is imported or read here. Else one line with the choices."""
    field = field or kind
    ok = isinstance(value, str) and (value in REGISTRIES[kind] or (kind != "dataset" and is_import_string(value)))
    if kind == "dataset" and isinstance(value, str):
        base = split_variant(value)[1]
        tfds_name = base.startswith("tfds:") and bool(re.fullmatch(r"[\w.]+(/[\w.]+)?(:[\w.]+)?", base[5:]))
        ok = base in DATASETS or tfds_name
        ok = ok or (base.startswith("npz:") and len(base) > 4)
    if not ok:
        raise ConfigError(f"{field}: unknown value {value!r}; choose from: {_choices(kind)}")
    return value


def get(kind: str, name: str):
    """The record for `name` (checked as `check` does); import strings and dataset sources get a
    record made from the string, without importing or reading anything."""
    check(kind, name)
    reg = REGISTRIES[kind]
    if name in reg:
        return reg[name]
    short = slug(name)
    if kind == "optimizer":
        return Optimizer(name, short, "adaptive", source=name)
    if kind == "norm":
        return Norm(name, short, "black", source=name)
    if kind == "arch":
        return Arch(name, short, packable=True, source=name)
    prefixes, base = split_variant(name)
    if prefixes:
        rec = get("dataset", base)
        display = rec.display
        for p in reversed(prefixes):
            display = VARIANTS[p].display.format(display)
        return dataclasses.replace(rec, name=name, display=display)
    if base.startswith("tfds:"):
        return Dataset(name, short, DEFAULT_VALIDATION_FRACTION, tfds=base[5:])
    return Dataset(name, short, DEFAULT_VALIDATION_FRACTION, npz=base[4:])


def display(kind: str, name: str) -> str:
    """How tables and plots name a component (for a user's, what its run folders recorded, else the
    attribute's name); a name kbn does not know stays as it is."""
    learnt = _LEARNT.get().get((kind, name), {}).get("display")
    if learnt:
        return learnt
    try:
        return get(kind, name).display
    except ConfigError:
        return name


def order(kind: str, names) -> list[str]:
    """`names` in the registry's order (the thesis's); variants of kbn's datasets after those, by
    variant, then base; names of one's own last, sorted."""
    known = list(REGISTRIES[kind])

    def rank(name):
        if name in known:
            return 0, 0, known.index(name), name
        prefixes, base = split_variant(name) if kind == "dataset" else ([], name)
        if prefixes and base in known:
            return 1, list(VARIANTS).index(prefixes[0]), known.index(base), name
        return 2, 0, 0, name

    return sorted(set(names), key=rank)


def family(name: str) -> str:
    """An optimizer's family for the findings. A user's is "adaptive" unless declared; declared
    families are learnt from run folders (`learn`) or the user's object."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name].family
    return _LEARNT.get().get(("optimizer", name), {}).get("family", "adaptive")


def learn(kind: str, name: str, facts: dict, into: dict) -> None:
    """Adds to `into` the facts a run folder recorded about a user's component (its declared family,
    display name, a dataset's class count), so a report shows them without importing the user's code.
    `into` travels with that folder's results (`RunScan.facts`); `learnt(into)` puts it in force."""
    if name not in REGISTRIES[kind]:
        into.setdefault((kind, name), {}).update({k: v for k, v in facts.items() if v is not None})


@contextlib.contextmanager
def learnt(facts: dict):
    """`display`, `family` and `classes` know these facts (`learn`) inside the block, on top of those
    already in force: each report reads its own folders' facts, so two sweeps read in one process
    (a notebook) never change each other's names or families."""
    merged = dict(_LEARNT.get())
    for key, known in facts.items():
        merged[key] = {**merged.get(key, {}), **known}
    token = _LEARNT.set(merged)
    try:
        yield
    finally:
        _LEARNT.reset(token)


def classes(dataset: str) -> int | None:
    """A dataset's class count: the registry's, else what its run folders recorded (None: unknown)."""
    try:
        known = get("dataset", dataset).classes
    except ConfigError:
        known = None
    return known or _LEARNT.get().get(("dataset", dataset), {}).get("classes")


# (kind, name) -> facts, per context (`learnt`); the default is never written to
_LEARNT: contextvars.ContextVar[dict] = contextvars.ContextVar("kbn_learnt", default=MappingProxyType({}))


# ---------------------------------------------------------------- a run's user components


def user_components(settings: dict) -> dict:
    """For each of a run's settings that is an import string: the string, its module's file and
    sha256, and what kbn learnt of the object (display name, family). Imports the modules, so it runs
    just before training; an import string that cannot be had fails here in one line."""
    out = {}
    for kind in ("optimizer", "norm", "arch"):
        name = settings.get(kind)
        if not is_import_string(name or ""):
            continue
        rec = get(kind, name)
        obj, path = import_object(kind, name)
        rec.resolve(kind)  # the kind of object is checked here too
        facts = {"import": name, "file": str(path) if path else None, "sha256": file_hash(path)}
        facts["display"] = getattr(obj, "kbn_name", None) or rec.display
        if kind == "optimizer":
            fam = getattr(obj, "kbn_family", "adaptive")
            if fam not in FAMILIES:
                raise ConfigError(f"optimizer: {name!r} declares kbn_family = {fam!r}; choose from: "
                                  f"{', '.join(FAMILIES)}")
            facts["family"] = fam
        out[kind] = facts
    dataset = settings.get("dataset")
    if dataset:
        rec = get("dataset", dataset)
        if rec.npz:
            p = Path(rec.npz)
            if not p.is_file():  # read before, gone now: a run must not record data it cannot vouch for
                from kbn.core.errors import DataFileError

                raise DataFileError(f"dataset npz:{rec.npz}: no such file (moved or deleted?); restore it and run the "
                                    "same command (a sweep resumes where it stopped), or give the file's path")
            out["dataset"] = {"npz": str(p.resolve()), "sha256": file_hash(p)}
    return out


def sweep_components(settings_list) -> dict:
    """Every user component of these runs' settings, keyed by its import string or npz path."""
    out = {}
    for settings in settings_list:
        for kind, facts in user_components(settings).items():
            out[facts.get("import") or facts.get("npz")] = {**facts, "kind": kind}
    return out


def changed_components(old: dict, new: dict) -> str | None:
    """One line naming the first user component whose module or file changed, or None."""
    for kind, facts in new.items():
        before = (old or {}).get(kind)
        if before and before.get("sha256") and facts.get("sha256") and before["sha256"] != facts["sha256"]:
            what = facts.get("import") or facts.get("npz")
            where = facts.get("file") or facts.get("npz")
            return (f"{facts.get('kind', kind)} {what}: {where} changed since these runs were made (sha256 {before['sha256'][:12]} -> "
                    f"{facts['sha256'][:12]}); restore it, or use another --logdir for the changed one")
    return None
