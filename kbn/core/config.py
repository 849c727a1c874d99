"""Settings as data: the validated configuration of one training run and of a sweep.
Pure data and checks: it must not import Keras, load data or know how a run trains."""

from __future__ import annotations

import dataclasses

import numpy as np

from kbn.core import registry
from kbn.core.checks import ACTIVATIONS, SEED_MAX, check_choice, check_init, check_positive, check_seed
from kbn.core.errors import ConfigError

# The components (datasets, networks, norms, optimizers) are kbn.core.registry's; this module validates names
# against it without importing anything a name points to.
# What BatchNormalization evaluates with (kbn.training.bn_stats): Keras's moving averages (momentum 0.99,
# kbn.core.registry's "batch"), or Ioffe & Szegedy's Algorithm 2, population statistics recomputed before
# every evaluation over BN_BATCHES training batches (fvcore's PreciseBN defaults to 200; README,
# "Batch norm's statistics", measures how many are enough).
BN_STATISTICS = ("moving", "population")
BN_BATCHES = 100


def check_bn_statistics(rule, batches) -> None:
    """bn_statistics and bn_batches, of a run or a sweep file."""
    check_choice("bn_statistics", rule, BN_STATISTICS)
    check_positive("bn_batches", batches)
    if rule == "moving" and batches != BN_BATCHES:
        raise ConfigError(f"bn_batches: {batches} is only meaningful with bn_statistics = population (the moving "
                          "averages are kept during training); set bn_statistics = population or leave bn_batches out")


# The arithmetic a run trains in (kbn.models.precision): float32 throughout, or Keras's mixed_bfloat16 policy
# (bfloat16 compute; float32 weights, optimizer state, BN statistics, output softmax and loss).
PRECISIONS = ("float32", "mixed_bfloat16")


def parse_eval_steps(field: str, value) -> tuple[int, ...]:
    """Extra evaluation steps: a list of positive integers, or "log:FIRST:LAST:N", N log-spaced steps
    from FIRST to LAST rounded to 2 significant digits (dense where curves move)."""
    if isinstance(value, str):
        parts = value.split(":")
        try:
            if len(parts) != 4 or parts[0] != "log":
                raise ValueError
            first, last, n = int(parts[1]), int(parts[2]), int(parts[3])
            if not 0 < first < last or n < 2:
                raise ValueError
        except ValueError:
            raise ConfigError(f"{field}: got {value!r}; give a list of steps or log:FIRST:LAST:N "
                              "(0 < FIRST < LAST, N >= 2), e.g. log:100:5000:12") from None
        value = sorted({int(float(f"{v:.2g}")) for v in np.geomspace(first, last, n)})
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{field}: got {value!r}; give a non-empty list of steps or log:FIRST:LAST:N")
    out = [check_positive(f"{field}[{i}]", v) for i, v in enumerate(value)]
    if out != sorted(set(out)):
        raise ConfigError(f"{field}: {value!r} must increase strictly")
    return tuple(out)


def check_address(host: str, port: int | None) -> None:
    """The chief's --host and --port, checked before anything starts."""
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"port: got {port}; give a port from 1 to 65535 (or leave it out for a free one)")
    import socket

    try:
        socket.getaddrinfo(host, port or 0)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"host: cannot resolve {host!r} ({getattr(e, 'strerror', e)}); give this machine's "
                          "address or name, e.g. 127.0.0.1 or 0.0.0.0") from None


def _setting(default, help: str, metavar: str | None = None):
    """A setting's field: its metadata is its `kbn train` option's help (kbn.cli builds the options from
    these); a sweep file names it by the field's name."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


def _flag(field: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{field}: got {value!r}; give true or false")
    return value


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run trains, whatever it trains (its dataset, network, norm, optimizer, rate and seed are
    TrainConfig's): one run's settings, and the template a sweep holds for every run it makes
    (SweepConfig is one; its file sets these at its top level). A new setting is one field here with
    its check in `__post_init__`: `kbn train` gets its option, a sweep file its key, every run of a
    sweep the value, config.json and sweep.json record it, and a resume refuses a change of it."""

    epochs: int = _setting(5, "training epochs (step-based runs: the default length, epochs x steps/epoch)")
    batch_size: int = _setting(128, "examples per optimizer step")
    subset: int | None = _setting(None, "train on the first N training examples only", metavar="N")
    # None: evaluate once per epoch
    eval_every_steps: int | None = _setting(
        None, "evaluate (validation and test) every K steps instead of every epoch", metavar="K")
    # only with eval_every_steps; default epochs * steps/epoch
    total_steps: int | None = _setting(None, "with --eval-every-steps: train this many steps")
    test_every_epoch: bool = _setting(False, "evaluate test after every epoch too")
    activation: str | None = _setting(None, "override the architecture's activation")  # None: its own
    depth: int | None = _setting(None, "override the number of hidden layers / conv blocks")
    width: int | None = _setting(None, "override the units per layer / base feature maps")
    init: str = _setting("glorot_uniform", "kernel initialiser: glorot_uniform (default) or gaussian:STDDEV, "
                         "N(0, STDDEV^2) on every kernel (Ioffe & Szegedy 4.1)")  # INITS
    # Evaluations at these steps too (below total_steps), besides every eval_every_steps: dense early points.
    eval_steps: tuple[int, ...] | None = _setting(
        None, "with --eval-every-steps: evaluate at these steps too, comma-separated or log:FIRST:LAST:N "
        "(N log-spaced steps, e.g. log:100:5000:12)", metavar="STEPS")
    # > 0: at each evaluation, the percentiles of every hidden layer's pre-activation (the input to its
    # nonlinearity) on the first N validation images go to preactivations.csv and TensorBoard.
    probe_preactivations: int = _setting(
        0, "log the hidden layers' pre-activation percentiles on the first N validation images at every "
        "evaluation (preactivations.csv, TensorBoard)", metavar="N")
    bn_statistics: str = _setting(
        "moving", "what batch norm evaluates with: moving (Keras's moving averages, momentum 0.99) or population "
        "(recomputed before every evaluation over --bn-batches training batches, Ioffe & Szegedy Alg. 2)",
        metavar="RULE")  # BN_STATISTICS
    bn_batches: int = _setting(BN_BATCHES, "with --bn-statistics population: the training batches (of the "
                               "batch size) the population statistics are computed over", metavar="N")
    precision: str = _setting(
        "float32", "float32 (default) or mixed_bfloat16: bfloat16 compute, float32 weights, optimizer state, "
        "BN statistics, softmax and loss (Keras's mixed-precision policy)", metavar="POLICY")  # PRECISIONS

    def __post_init__(self):
        """Each setting alone, then the ones that constrain each other; one line naming the field."""
        if self.activation is not None:
            check_choice("activation", self.activation, ACTIVATIONS)
        for name in ("epochs", "batch_size", "subset", "eval_every_steps", "total_steps", "depth", "width"):
            object.__setattr__(self, name, check_positive(name, getattr(self, name), allow_none=name not in
                                                          ("epochs", "batch_size")))
        _flag("test_every_epoch", self.test_every_epoch)
        check_init(self.init)
        p = self.probe_preactivations
        if not isinstance(p, int) or isinstance(p, bool) or p < 0:
            raise ConfigError(f"probe_preactivations: got {p!r}; give a number of validation images (0: off)")
        check_bn_statistics(self.bn_statistics, self.bn_batches)
        object.__setattr__(self, "bn_batches", int(self.bn_batches))
        check_choice("precision", self.precision, PRECISIONS)
        if self.eval_steps is not None:
            if self.eval_every_steps is None:
                raise ConfigError("eval_steps: only with eval_every_steps (the regular evaluations they add to)")
            object.__setattr__(self, "eval_steps", parse_eval_steps("eval_steps", self.eval_steps))
        if self.total_steps is not None and self.eval_every_steps is None:
            raise ConfigError("total_steps: only meaningful with eval_every_steps")
        if self.total_steps is not None and self.eval_every_steps is not None and self.eval_every_steps > self.total_steps:
            raise ConfigError(f"eval_every_steps: {self.eval_every_steps} is more than total_steps {self.total_steps}; "
                              "the run would be evaluated only once, at its end")
        if self.subset is not None and self.batch_size > self.subset:
            raise ConfigError(f"batch_size: {self.batch_size} is more than subset {self.subset}; every step would see "
                              "all of the subset: give a smaller batch_size or a larger subset")

    def settings(self) -> dict:
        """The RunSettings fields alone, by name: the template a run is made from."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)}


RUN_SETTINGS = tuple(f.name for f in dataclasses.fields(RunSettings))


@dataclasses.dataclass(frozen=True)
class _Trains:
    """What one run trains: its cell, learning rate and seed (first among TrainConfig's fields)."""

    dataset: str = _setting("fashion_mnist", "the dataset: a name kbn knows, tfds:NAME, npz:PATH or <variant>_<name>")
    arch: str = _setting("mlp", "the network: a name kbn knows or an import string package.module:builder")
    norm: str = _setting("none", "the normalization: a name kbn knows or an import string package.module:Layer")
    optimizer: str = _setting("adam", "the optimizer: a name kbn knows or an import string package.module:Name")
    lr: float = _setting(1e-3, "learning rate")
    seed: int = _setting(0, "seed of the initial weights and the data order")


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunSettings, _Trains):
    """Every setting of one training run: what it trains (dataset, arch, norm, optimizer, lr, seed),
    how (RunSettings) and where its data is read from; a bad value is refused in one clear line."""

    data_dir: str | None = _setting(None, "folder with the original dataset files")

    def __post_init__(self):
        for kind in registry.KINDS:
            registry.check(kind, getattr(self, kind))
        check_positive("lr", self.lr, float)
        check_seed("seed", self.seed)
        super().__post_init__()

    def eval_points(self, total_steps: int) -> list[int]:
        """The steps after which a step-based run evaluates: every eval_every_steps, the end, and the
        eval_steps below the end."""
        k = self.eval_every_steps
        regular = set(range(k, total_steps, k)) | {total_steps}
        return sorted(regular | {s for s in (self.eval_steps or ()) if s < total_steps})

    def run_name(self) -> str:
        """A folder name that says what the run is; identical settings give the same name."""
        names = [registry.slug(getattr(self, kind)) for kind in ("dataset", "arch", "norm", "optimizer")]
        parts = [*names, f"lr{self.lr:.4g}".replace("+", ""), f"s{self.seed}"]
        if self.subset:
            parts.append(f"n{self.subset}")
        return "-".join(parts)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["eval_steps"] = None if self.eval_steps is None else list(self.eval_steps)  # as config.json reads back
        return d


# ---------------------------------------------------------------- sweep files

SELECT_ON = ("validation", "test")
# How a cell's rate is chosen from its search (kbn.sweep.plan.choose): "best", the highest mean score;
# "stable", the highest among the rates that neither they nor their next larger rate diverged or
# collapsed in the search (the default: the best rate sits at the edge of stability).
SELECTIONS = ("stable", "best")
# Between two coarse values a decade apart, more fine points than this come closer than the 3
# significant digits a learning rate is written with: they would repeat each other.
MAX_FINE_PER_SIDE = 20
PHASES = ("coarse", "fine", "final")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of the study: the learning rate is searched per cell."""

    dataset: str
    arch: str
    norm: str
    optimizer: str

    @property
    def key(self) -> str:
        """Unique within a sweep (a sweep refuses two names with one short form, registry.slug)."""
        return "-".join(registry.slug(n) for n in (self.dataset, self.arch, self.norm, self.optimizer))


def _search(key: str, default):
    """A SweepConfig field set in the sweep file's [search] table, under `key`."""
    return dataclasses.field(default=default, metadata={"search": key})


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig(RunSettings):
    """A sweep file, validated: the cells, the learning-rate grids and the final runs. Its RunSettings
    fields are the template of every run it trains (`train_config`; the search may train shorter)."""

    name: str
    datasets: tuple[str, ...]
    archs: tuple[str, ...]
    norms: tuple[str, ...]
    optimizers: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    test_every_epoch: bool = True  # a sweep's final runs: the thesis's per-epoch tables
    select_on: str = "validation"
    # The [search] table's fields: their metadata is their key in it.
    coarse: tuple[float, ...] = _search("coarse", (1e-4, 1e-3, 1e-2, 1e-1, 1.0))
    coarse_by_optimizer: tuple[tuple[str, tuple[float, ...]], ...] = _search("coarse_by_optimizer", ())
    fine_per_side: int = _search("fine_per_side", 2)
    search_epochs: int | None = _search("epochs", None)  # None: the sweep's epochs
    search_total_steps: int | None = _search("total_steps", None)
    # Seeds the search trials train under, never a final run's: the final runs then estimate the
    # chosen rate afresh instead of repeating the training that won the selection (winner's curse).
    # A search point scores the mean over these seeds. () in code means the default: max(seeds) + 1.
    search_seeds: tuple[int, ...] = _search("seeds", ())
    selection: str = _search("selection", "stable")  # SELECTIONS
    # The fixed-rate protocol: every arm's final runs train at this rate, nothing is searched; a tuple of
    # rates (the file's list) trains every arm at each of them, each rate its own set of final runs.
    lr: float | tuple[float, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.lr is not None:  # nothing is searched: no grid, no search seeds
            object.__setattr__(self, "coarse", ())
            object.__setattr__(self, "coarse_by_optimizer", ())
        if not self.search_seeds:
            if max(self.seeds) == SEED_MAX and self.lr is None:
                raise ConfigError(f"search.seeds: missing, and the default, max(seeds) + 1, would be {SEED_MAX + 1}, "
                                  f"past the largest seed {SEED_MAX}; give search.seeds")
            free = max(self.seeds) + 1 if max(self.seeds) < SEED_MAX else min(set(range(len(self.seeds) + 1)) - set(self.seeds))
            object.__setattr__(self, "search_seeds", (free,))
        overlap = sorted(set(self.search_seeds) & set(self.seeds))
        if overlap:
            raise ConfigError(f"search.seeds: {list(self.search_seeds)} shares {overlap} with seeds {list(self.seeds)}; "
                              "a final run must never repeat a search training")

    def cells(self) -> list[Cell]:
        return [Cell(d, a, n, o) for d in self.datasets for a in self.archs for n in self.norms for o in self.optimizers]

    def coarse_grid(self, optimizer: str) -> tuple[float, ...]:
        return dict(self.coarse_by_optimizer).get(optimizer, self.coarse)

    def fine_grid(self, optimizer: str, best: float) -> tuple[float, ...]:
        """`fine_per_side` log-spaced values between the coarse winner and each neighbour (beyond
        the grid's edge with the same spacing when the winner is at an edge)."""
        grid = sorted(self.coarse_grid(optimizer))
        if self.fine_per_side == 0 or len(grid) < 2 or best not in grid:
            return ()
        i = grid.index(best)
        ratio_down = best / grid[i - 1] if i > 0 else grid[i + 1] / best
        ratio_up = grid[i + 1] / best if i + 1 < len(grid) else best / grid[i - 1]
        m = self.fine_per_side
        vals = [best / ratio_down ** (k / (m + 1)) for k in range(m, 0, -1)]
        vals += [best * ratio_up ** (k / (m + 1)) for k in range(1, m + 1)]
        # 3 significant digits: values that round alike (a dense grid) or onto a coarse value are one trial
        rounded = dict.fromkeys(float(f"{v:.3g}") for v in vals)
        return tuple(v for v in rounded if v not in grid)

    def nominal_fine(self, optimizer: str) -> int:
        """The fine grid's size before the coarse winner is known: the largest over possible winners."""
        grid = self.coarse_grid(optimizer)
        return max((len(self.fine_grid(optimizer, lr)) for lr in grid), default=0)

    @property
    def rates(self) -> tuple[float, ...]:
        """The fixed-rate protocol's shared rates, in the file's order (one for a single-number lr);
        () for a sweep that searches its rates."""
        return () if self.lr is None else self.lr if isinstance(self.lr, tuple) else (self.lr,)

    @property
    def rate_list(self) -> bool:
        """Whether `lr` is a list of shared rates (each its own final runs, status rows and tables)."""
        return isinstance(self.lr, tuple)

    def some_lr(self, optimizer: str) -> float:
        """A rate this sweep trains `optimizer` at (for checks before anything trains)."""
        return self.rates[0] if self.lr is not None else self.coarse_grid(optimizer)[0]

    def protocol(self) -> dict:
        """How the learning rate was chosen and what batch norm evaluates with, as a report states it
        next to the numbers."""
        bn = {"bn_statistics": self.bn_statistics,
              **({"bn_batches": self.bn_batches} if self.bn_statistics == "population" else {}),
              "precision": self.precision}
        if self.lr is not None:
            lr = list(self.lr) if isinstance(self.lr, tuple) else self.lr
            return {"lr_protocol": "fixed", "lr": lr, "final_epochs": self.epochs,
                    "final_total_steps": self.total_steps, "final_seeds": list(self.seeds), **bn}
        return {**bn, "lr_protocol": "tuned", "select_on": self.select_on, "selection": self.selection,
                "search_seeds": list(self.search_seeds),
                "search_epochs": self.search_epochs or self.epochs, "search_total_steps": self.search_total_steps,
                "final_epochs": self.epochs, "final_total_steps": self.total_steps, "final_seeds": list(self.seeds),
                "coarse": list(self.coarse), "coarse_by_optimizer": dict(self.to_dict()["coarse_by_optimizer"]),
                "fine_per_side": self.fine_per_side}

    def train_config(self, cell: Cell, lr: float, seed: int, phase: str) -> TrainConfig:
        """The run `cell` trains at `lr` and `seed` in `phase`: this sweep's RunSettings, the search's
        own length where it has one, and test accuracy every epoch for final runs only."""
        search = phase != "final"
        run = self.settings()
        if search:
            run.update(epochs=self.search_epochs or self.epochs, total_steps=self.search_total_steps or self.total_steps,
                       test_every_epoch=False)
        return TrainConfig(dataset=cell.dataset, arch=cell.arch, norm=cell.norm, optimizer=cell.optimizer, lr=lr,
                           seed=seed, **run)

    def to_dict(self) -> dict:
        """Every field by its name, the search's beside the rest (search_epochs, coarse, ...)."""
        d = dataclasses.asdict(self)
        d["coarse_by_optimizer"] = {k: list(v) for k, v in self.coarse_by_optimizer}
        d["eval_steps"] = None if self.eval_steps is None else list(self.eval_steps)
        return d

    def to_file_dict(self) -> dict:
        """The sweep in its file's own shape (the [search] table nested, unset values left out), as
        `sweep_from_dict` reads it back: sweep.json holds this."""
        return file_shape(_as_lists(self.to_dict()))


# Likewise for a run's config.json: a run made before a setting existed trained at the setting's default.
SETTING_DEFAULTS = TrainConfig().to_dict()

# A sweep file's keys, in SweepConfig's field order: the [search] table's where its first field is.
# SEARCH_FIELDS: SweepConfig's field -> its key in [search].
SEARCH_FIELDS = {f.name: f.metadata["search"] for f in dataclasses.fields(SweepConfig) if "search" in f.metadata}
_SEARCH_KEYS = tuple(SEARCH_FIELDS.values())
# the sweep's own keys first, then [search], then the run settings every run of it takes (RunSettings)
_OWN = tuple(f.name for f in dataclasses.fields(SweepConfig) if f.name not in RUN_SETTINGS and f.name not in SEARCH_FIELDS)
_TOP_KEYS = (*_OWN, "search", *RUN_SETTINGS)
_REQUIRED = ("datasets", "archs", "norms", "optimizers", "epochs")  # a sweep says what and how long it trains


def _as_lists(value):
    """Tuples as lists, all the way down: a sweep file's (and JSON's) shape."""
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return [_as_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def file_shape(flat: dict) -> dict:
    """SweepConfig's fields by name (`SweepConfig.to_dict`, and sweep.json as kbn wrote it before it
    kept the file's shape) -> the sweep file's shape: the search's fields in a `search` table under
    their keys there, unset (None) values left out; a fixed-rate sweep (lr set) has no search."""
    top = {k: v for k, v in flat.items() if k not in SEARCH_FIELDS and v is not None}
    search = {SEARCH_FIELDS[k]: v for k, v in flat.items() if k in SEARCH_FIELDS and v is not None}
    return top if top.get("lr") is not None else {**top, "search": search}


def _names(where, field, value, kind) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {field}: got {value!r}; give a non-empty list from: "
                          f"{', '.join(registry.REGISTRIES[kind])}")
    for i, v in enumerate(value):
        registry.check(kind, v, f"{field}[{i}]")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: {field}: {value!r} names an entry twice")
    short = {}
    for v in value:  # run folders and cell keys use the short form
        other = short.setdefault(registry.slug(v), v)
        if other != v:
            raise ConfigError(f"{where}: {field}: {other!r} and {v!r} have the same short name {registry.slug(v)!r} "
                              "in run folders; rename one of them")
    return tuple(value)


def _seeds(field, seeds) -> tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds):
        raise ConfigError(f"{field}: got {seeds!r}; give a non-empty list of distinct integers from 0 to {SEED_MAX}")
    return tuple(check_seed(f"{field}[{i}]", s) for i, s in enumerate(seeds))


def _grid(where, field, value) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: {field}: got {value!r}; give a non-empty list of positive learning rates")
    out = tuple(check_positive(f"{field}[{i}]", v, float) for i, v in enumerate(value))
    if len(set(out)) != len(out):
        raise ConfigError(f"{where}: {field}: {value!r} lists a learning rate twice")
    return out


def _fixed_rates(value) -> float | tuple[float, ...]:
    """The fixed-rate protocol's `lr`: a positive number (one rate, as ever), or a non-empty list of
    distinct positive numbers (every arm at each; kept a tuple even with one element, so sweep.json
    writes back what the file said)."""
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"lr: got {value!r}; give a positive learning rate or a non-empty list of them")
        out = tuple(check_positive(f"lr[{i}]", v, float) for i, v in enumerate(value))
        if len(set(out)) != len(out):
            raise ConfigError(f"lr: {value!r} lists a learning rate twice; give each rate once")
        return out
    if isinstance(value, str):
        raise ConfigError(f"lr: got {value!r}; give a positive learning rate or a non-empty list of them")
    return check_positive("lr", value, float)


def _check_keys(raw: dict) -> dict:
    """Unknown and missing keys; returns the [search] table."""
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown field {key!r}; allowed: {', '.join(_TOP_KEYS)}")
    search = raw.get("search", {})
    if not isinstance(search, dict):
        raise ConfigError(f"search: got {search!r}; it must be a table ([search])")
    for key in search:
        if key not in _SEARCH_KEYS:
            raise ConfigError(f"unknown field search.{key}; allowed: {', '.join(_SEARCH_KEYS)}")
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"{key}: missing; it is required")
    return search


def _run_fields(raw: dict, where: str, default_name: str) -> dict:
    """The fields outside [search]: the sweep's own (its cells, seeds, fixed rate), validated here, and
    the run settings of its runs as the file gives them (RunSettings checks them, as it does a run's)."""
    fixed_lr = _fixed_rates(raw["lr"]) if "lr" in raw else None
    if fixed_lr is not None and "search" in raw:
        shown = ", ".join(f"{r:g}" for r in fixed_lr) if isinstance(fixed_lr, tuple) else f"{fixed_lr:g}"
        raise ConfigError(f"lr: a fixed rate ({shown}) trains every arm at it with no search; remove "
                          "[search], or remove lr to tune the rate per cell")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name.strip() or "/" in name or name in (".", "..") or not name.isprintable():
        raise ConfigError(f"name: got {name!r}; give a short name without '/' (it names the sweep's folder, "
                          "logs/<name>; '.' and '..' are not names)")
    return dict(
        name=name, seeds=_seeds("seeds", raw.get("seeds", [0])),
        select_on=check_choice("select_on", raw.get("select_on", "validation"), SELECT_ON),
        optimizers=_names(where, "optimizers", raw["optimizers"], "optimizer"),
        datasets=_names(where, "datasets", raw["datasets"], "dataset"),
        archs=_names(where, "archs", raw["archs"], "arch"),
        norms=_names(where, "norms", raw["norms"], "norm"),
        lr=fixed_lr, **{k: raw[k] for k in RUN_SETTINGS if k in raw},
    )


def _search_fields(search: dict, where: str, optimizers: tuple[str, ...]) -> dict:
    """The [search] table's fields, validated, by their SweepConfig names."""
    by_opt = search.get("coarse_by_optimizer", {})
    if not isinstance(by_opt, dict):
        raise ConfigError(f"search.coarse_by_optimizer: got {by_opt!r}; give a table optimizer = [lrs]")
    for opt in by_opt:
        if opt not in optimizers:
            raise ConfigError(f"search.coarse_by_optimizer: {opt!r} is not among this sweep's optimizers "
                              f"({', '.join(optimizers)}); remove its grid or add it to optimizers")
    fine = search.get("fine_per_side", 2)
    if not isinstance(fine, int) or isinstance(fine, bool) or not 0 <= fine <= MAX_FINE_PER_SIDE:
        raise ConfigError(f"search.fine_per_side: got {fine!r}; give an integer from 0 to {MAX_FINE_PER_SIDE}")
    return dict(
        search_seeds=_seeds("search.seeds", search["seeds"]) if "seeds" in search else (),
        coarse=_grid(where, "search.coarse", search.get("coarse", list(SweepConfig.coarse))),
        coarse_by_optimizer=tuple(
            (o, _grid(where, f"search.coarse_by_optimizer.{o}", v)) for o, v in sorted(by_opt.items())),
        fine_per_side=fine,
        selection=check_choice("search.selection", search.get("selection", "stable"), SELECTIONS),
        search_epochs=check_positive("search.epochs", search.get("epochs"), allow_none=True),
        search_total_steps=check_positive("search.total_steps", search.get("total_steps"), allow_none=True),
    )


def _check_whole(cfg: SweepConfig) -> None:
    """What no single field shows: a search longer than the final runs, or a cell that makes no valid run."""
    if cfg.search_epochs and cfg.search_epochs > cfg.epochs:
        raise ConfigError(f"search.epochs: {cfg.search_epochs} is longer than the final runs' {cfg.epochs} epochs; "
                          "a rate is chosen for the length the final runs train, or a shorter one")
    for cell in cfg.cells()[:1]:  # e.g. total_steps needs eval_every_steps
        cfg.train_config(cell, cfg.some_lr(cell.optimizer), cfg.seeds[0], "coarse")
        cfg.train_config(cell, cfg.some_lr(cell.optimizer), cfg.seeds[0], "final")


def sweep_from_dict(raw: dict, where: str = "sweep", default_name: str = "sweep") -> SweepConfig:
    """Validate a parsed sweep file (or sweep.json, in the same shape); every error names the file,
    the field and what is allowed."""
    try:
        search = _check_keys(raw)
        run = _run_fields(raw, where, default_name)
        cfg = SweepConfig(**run, **_search_fields(search, where, run["optimizers"]))
        _check_whole(cfg)
        return cfg
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(f"{where}:") else f"{where}: {msg}") from None


def load_sweep(path) -> SweepConfig:
    """Read and validate a sweep TOML file."""
    import tomllib
    from pathlib import Path

    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                          "save the sweep file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the sweep file ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return sweep_from_dict(raw, where=str(path), default_name=p.stem)


def cells_by_key(sweep: SweepConfig) -> dict[str, Cell]:
    return {c.key: c for c in sweep.cells()}


def off_plan(sweep: SweepConfig, cell: Cell, values: dict) -> str | None:
    """How a trial's phase, lr or seed is not one this sweep plans for `cell` (a trial.json edited by
    hand, or of another sweep), or None: such a trial is never counted as the sweep's work."""
    phase, lr, seed = values.get("phase"), float(values.get("lr", "nan")), values.get("seed")
    coarse = set(sweep.coarse_grid(cell.optimizer))
    fine = {v for best in coarse for v in sweep.fine_grid(cell.optimizer, best)}
    rates = {"coarse": coarse, "fine": fine,
             "final": set(sweep.rates) if sweep.lr is not None else coarse | fine}.get(phase)
    if rates is None:
        return f"phase {phase!r} is not one of coarse, fine, final"
    if lr not in rates:
        return f"{phase} lr {values.get('lr')} is not in this sweep's {phase} grid"
    seeds = sweep.seeds if phase == "final" else sweep.search_seeds
    if seed not in seeds:
        return f"seed {seed} is not among this sweep's {phase} seeds {list(seeds)}"
    return None
