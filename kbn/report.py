"""The thesis's and the poster's tables, from a sweep's final runs or from published numbers.

Everything starts from one long table of accuracies (LONG_COLUMNS: one accuracy, a fraction, per
dataset, arch, norm, optimizer, learning rate, seed, epoch or step, and split; a cell's runs differ
in seed, so the lr only says which rate the seeds were trained at). `scan_runs` builds it from run
folders, `read_long_csv` from a file in the same format (`kbn export` writes it), and the table
builders turn it into `Table`s that render as text, markdown, LaTeX or tidy CSV.

Relative improvement of adding a norm (x: accuracy % without, y: with): rel = (y - x) / (100 - x).
With several seeds, accuracies are seed means (shown mean ± std) and rel carries a 95% bootstrap
interval over seeds.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from kbn.runlog import check_run, read_metrics
from kbn.config import ARCHS, DATASETS, NORMS, OPTIMIZER_NAMES, OPTIMIZERS

DISPLAY = OPTIMIZER_NAMES
from kbn.errors import ConfigError, KbnError

LONG_COLUMNS = ["dataset", "arch", "norm", "optimizer", "lr", "seed", "epoch", "split", "accuracy"]
CELL = ["dataset", "arch", "norm", "optimizer"]
TIDY_COLUMNS = ["table", "dataset", "arch", "optimizer", "norm", "epoch", "quantity", "value"]
SPLITS = ("train", "validation", "test")
THESIS_EPOCHS = (2, 5, 20, 35, 50)
BOOTSTRAP = 2000
MISSING = "—"
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
ARCH_NAMES = {"mlp": "MLP", "cnn": "CNN", "deep_mlp": "deep MLP", "deep_cnn": "deep CNN", "ioffe_mlp": "Ioffe MLP"}


class ReportError(KbnError):
    """Input the reporter cannot read: the message names the file and what is wrong."""


def nice(dataset: str, arch: str | None = None) -> str:
    base = dataset.removeprefix("cluttered_")
    d = DATASET_NAMES.get(base, base) if base == dataset else f"cluttered {DATASET_NAMES.get(base, base)}"
    return d if arch is None else f"{d} + {ARCH_NAMES.get(arch, arch)}"


# ---------------------------------------------------------------- reading results


RUN_COLUMNS = ["dataset", "arch", "norm", "optimizer", "seed", "lr", "epoch", "step", "loss", "accuracy",
               "val_loss", "val_accuracy", "test_loss", "test_accuracy", "status"]


@dataclasses.dataclass
class RunScan:
    """The final runs under a folder (a run table), and what was left out of it and why: a report
    whose numbers silently lost a run would look whole."""

    runs: pd.DataFrame
    skipped: list[tuple[Path, str]]  # run folders that claim to be finished but cannot be trusted
    unfinished: int  # run folders without result.json
    folders: int  # run folders seen (search trials not counted)
    sweep_problems: list[str] = dataclasses.field(default_factory=list)  # failed or lost trials of a sweep

    def notices(self) -> list[str]:
        lines = [f"skipped {folder}: {why}" for folder, why in self.skipped] + self.sweep_problems
        return lines + ([f"{self.unfinished} unfinished run(s) not reported"] if self.unfinished else [])


def scan_runs(logdir: str | Path) -> RunScan:
    """Every final run under `logdir` (search trials left out), read through runlog.check_run: one
    row per evaluation, the metrics.csv rows with the run's settings. A diverged run is extended to
    its planned length at chance accuracy, so tables compare it as what it is: a run that learned
    nothing."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise ReportError(f"{logdir}: no such folder")
    # result.json too: a run whose config.json was lost is damaged, not absent
    folders = sorted({p.parent for name in ("config.json", "result.json") for p in logdir.rglob(name)
                      if "search" not in p.parent.relative_to(logdir).parts})
    records, skipped, unfinished, owner = [], [], 0, {}
    for folder in folders:
        check = check_run(folder)
        if check.damaged:
            skipped.append((folder, check.problem))
        elif check.result is None:
            unfinished += 1
        else:
            try:
                s = check.config["settings"]
                key, lr = tuple(s[k] for k in CELL + ["seed"]), s["lr"]
                rows = _run_records(check.config, check.result["status"], read_metrics(folder))
            except KeyError as e:
                skipped.append((folder, f"config.json has no setting {e.args[0]!r}"))
                continue
            # Tables treat a cell's runs as seeds: a second run of one seed (another lr, say) would
            # pass for a second seed and make a bootstrap interval out of one seed.
            if key in owner:
                other, other_lr = owner[key]
                raise ReportError(f"{other} and {folder}: two final runs of {' '.join(key[:4])} with seed "
                                  f"{key[4]} (lr {other_lr} and {lr}); a cell's runs must differ in seed: "
                                  "move one of them out of this folder")
            owner[key] = folder, lr
            records += rows
    return RunScan(pd.DataFrame.from_records(records, columns=RUN_COLUMNS), skipped, unfinished, len(folders),
                   _sweep_problems(logdir))


def _sweep_problems(logdir: Path) -> list[str]:
    """A sweep folder's failed and unreadable trials: cells they hold have no final runs, and a report
    must say why rather than show a bare gap (damaged runs are already among the skipped)."""
    if not (logdir / "sweep.json").is_file():
        return []
    from kbn.plan import folder_progress, problem_lines

    try:
        state = folder_progress(logdir)
    except KbnError as e:
        return [f"the sweep's own files cannot be read ({e})"]
    return [f"sweep: {line}" for line in problem_lines(state, kinds=("failed", "unreadable"))]


def run_table(logdir: str | Path) -> pd.DataFrame:
    """The run table of `scan_runs` alone (what it left out is in `scan_runs(logdir).notices()`)."""
    return scan_runs(logdir).runs


def _run_records(config: dict, status: str, rows: list[dict]) -> list[dict]:
    s = config["settings"]
    by_step = s.get("eval_every_steps") is not None
    base = {k: s[k] for k in ("dataset", "arch", "norm", "optimizer", "seed", "lr")} | {"status": status}
    records = [{**base, **{k: r.get(k) for k in RUN_COLUMNS if k in r},
                "epoch": None if by_step else int(r["epoch"]), "step": int(r["step"])} for r in rows]
    if status == "diverged" and rows:
        chance = {"val_accuracy": 0.1, "test_accuracy": 0.1}
        records[-1].update({k: v for k, v in chance.items() if records[-1].get(k) is None})  # the diverged row
        if by_step:
            k, last, total = s["eval_every_steps"], int(rows[-1]["step"]), config["schedule"]["total_steps"]
            for step in range((last // k + 1) * k, total + 1, k):
                records.append({**base, **chance, "epoch": None, "step": step})
            if total % k and last < total:
                records.append({**base, **chance, "epoch": None, "step": total})
        else:
            for e in range(int(rows[-1]["epoch"]) + 1, s["epochs"] + 1):
                records.append({**base, **chance, "epoch": e, "step": None})
    return records


def long_from_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The long format (LONG_COLUMNS plus `step`) from a run table."""
    parts = []
    for split, col in (("train", "accuracy"), ("validation", "val_accuracy"), ("test", "test_accuracy")):
        part = runs[runs[col].notna()][["dataset", "arch", "norm", "optimizer", "lr", "seed", "epoch", "step", col]]
        parts.append(part.rename(columns={col: "accuracy"}).assign(split=split))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LONG_COLUMNS + ["step"])
    # an epoch-based run's step is not its x axis
    df.loc[df["epoch"].notna(), "step"] = np.nan
    return _normalise(df[LONG_COLUMNS + ["step"]])


def collect_runs(logdir: str | Path) -> pd.DataFrame:
    """Long-format accuracies of every finished run under `logdir` (see `scan_runs` for what is left out)."""
    return long_from_runs(run_table(logdir))


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    if "step" not in df:
        df["step"] = np.nan
    if "epoch" not in df:
        df["epoch"] = np.nan
    if "lr" not in df:  # published numbers often do not say
        df["lr"] = np.nan
    for col in ("epoch", "step", "lr"):
        df[col] = df[col].astype(float)
    df["seed"] = df["seed"].astype(int)
    df["accuracy"] = df["accuracy"].astype(float)
    return df.reset_index(drop=True)


_OPT_BY_NAME = {**{k: k for k in OPTIMIZERS}, **{v.lower(): k for k, v in DISPLAY.items()}}


def read_long_csv(path: str | Path) -> pd.DataFrame:
    """Published or exported accuracies: columns dataset,arch,norm,optimizer,[lr,]seed,epoch|step,split,accuracy.
    Every row is checked, since a bad one would change the numbers quietly (a repeated key averaged
    in as a seed, a fractional seed truncated): an error names the file's line (counting every
    line, the header included, from 1), the column and the value."""
    path = Path(path)
    lines = _csv_lines(path)
    if not lines:
        raise ReportError(f"{path}: the file is empty; expected the header {','.join(LONG_COLUMNS)} "
                          "and a row per accuracy")
    (_, header), rows = lines[0], lines[1:]
    need = [c for c in LONG_COLUMNS if c not in ("epoch", "lr")]
    missing = [c for c in need if c not in header] + ([] if {"epoch", "step"} & set(header) else ["epoch (or step)"])
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(LONG_COLUMNS)}")
    if not rows:
        raise ReportError(f"{path}: no data rows under the header")
    records, seen, lrs = [], {}, {}
    for n, fields in rows:
        if len(fields) != len(header):
            raise ReportError(f"{path} line {n}: {len(fields)} fields where the header has {len(header)}")
        row = dict(zip(header, fields))
        rec = _long_row(f"{path} line {n}", row)
        axis = "epoch" if rec["epoch"] is not None else "step"
        what = f"{' '.join(rec[c] for c in CELL)} seed {rec['seed']} {axis} {rec[axis]} {rec['split']}"
        key = tuple(rec[c] for c in CELL + ["seed", "epoch", "step", "split"])
        if key in seen:
            m, acc = seen[key]
            how = "the same accuracy" if acc == row["accuracy"] else f"accuracy {acc}"
            raise ReportError(f"{path} line {n}: repeats the key of line {m} ({what}) with accuracy "
                              f"{row['accuracy']} where line {m} has {how}; each key may appear once, "
                              "exact repeats included")
        seen[key] = n, row["accuracy"]
        if not np.isnan(rec["lr"]):
            m, lr = lrs.setdefault(key[:5], (n, rec["lr"]))
            if lr != rec["lr"]:
                raise ReportError(f"{path} line {n}: {' '.join(rec[c] for c in CELL)} seed {rec['seed']} has lr "
                                  f"{rec['lr']:g} but line {m} has lr {lr:g}: two runs under one seed; a cell's "
                                  "runs must differ in seed")
        records.append(rec)
    return _normalise(pd.DataFrame.from_records(records, columns=LONG_COLUMNS + ["step"]))


def _csv_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number in the file, fields) of every line that is not blank or a # comment."""
    try:
        text = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    out = []
    for n, line in enumerate(text, 1):
        line = line.split("#", 1)[0]  # names and numbers never hold '#'
        if line.strip():
            out.append((n, [f.strip() for f in next(csv.reader([line]))]))
    return out


def _whole(text: str, low: int) -> int | None:
    """`text` as a whole number >= low ("5" or "5.0"), else None."""
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if np.isfinite(v) and v == int(v) and v >= low else None


def _long_row(where: str, row: dict) -> dict:
    """One row of a long-format file, typed and checked; `where` names the file and line."""

    def bad(col, want):
        raise ReportError(f"{where}: column {col} is {row.get(col, '')!r}; {want}")

    rec = {}
    for col, allowed in (("dataset", DATASETS), ("arch", ARCHS), ("norm", NORMS), ("split", SPLITS)):
        if row[col] not in allowed:
            bad(col, f"choose from: {', '.join(allowed)}")
        rec[col] = row[col]
    rec["optimizer"] = _OPT_BY_NAME.get(row["optimizer"].lower())
    if rec["optimizer"] is None:
        bad("optimizer", f"choose from: {', '.join(OPTIMIZERS)}")
    rec["seed"] = _whole(row["seed"], 0)
    if rec["seed"] is None:
        bad("seed", "give a whole number from 0")
    given = [axis for axis in ("epoch", "step") if row.get(axis)]
    if len(given) != 1:
        raise ReportError(f"{where}: give an epoch or a step (one of them), got {len(given)}")
    rec["epoch"] = rec["step"] = None
    rec[given[0]] = _whole(row[given[0]], 1)
    if rec[given[0]] is None:
        bad(given[0], "give a whole number from 1")
    try:
        rec["accuracy"] = float(row["accuracy"])
    except ValueError:
        rec["accuracy"] = np.nan
    if not 0 <= rec["accuracy"] <= 1:  # NaN fails too
        bad("accuracy", "give a fraction in [0, 1] (not a percentage)")
    rec["lr"] = np.nan
    if row.get("lr"):
        try:
            rec["lr"] = float(row["lr"])
        except ValueError:
            pass
        if not 0 < rec["lr"] < np.inf:  # NaN fails too
            bad("lr", "give a positive number, or leave it empty")
    return rec


def export_long(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The long format, split by x axis: {'epoch': ..., 'step': ...} (only those present)."""
    out = {}
    for axis in ("epoch", "step"):
        part = df[df[axis].notna()]
        if len(part):
            key = LONG_COLUMNS[:6]  # the cell, its lr and the seed
            part = part[key + [axis, "split", "accuracy"]].copy()
            part[axis] = part[axis].astype(int)
            out[axis] = part.sort_values(key + [axis, "split"]).reset_index(drop=True)
    return out


def check_epochs(df: pd.DataFrame, epochs: list[int] | None) -> str | None:
    """A notice naming the requested epochs that no result has (their columns are left out), or
    an error naming the epochs there are when none of them is there."""
    have = sorted(int(e) for e in df["epoch"].dropna().unique())
    missing = [e for e in epochs or [] if e not in have]
    if not missing:
        return None
    if len(missing) == len(epochs):
        there = f"the results have {_epochs(have)}" if have else "the results count steps, not epochs"
        raise ConfigError(f"epochs: no run has {_epochs(missing)}; {there}")
    return f"no run has {_epochs(missing)}; the tables leave {'it' if len(missing) == 1 else 'them'} out"


def _epochs(eps: list[int]) -> str:
    """'epoch 3', 'epochs 2, 5', 'epochs 1–50' (runs of 4 or more as a range)."""
    parts, i = [], 0
    while i < len(eps):
        j = i
        while j + 1 < len(eps) and eps[j + 1] == eps[j] + 1:
            j += 1
        parts += [f"{eps[i]}–{eps[j]}"] if j - i >= 3 else [str(e) for e in eps[i:j + 1]]
        i = j + 1
    return ("epoch " if len(eps) == 1 else "epochs ") + ", ".join(parts)


# ---------------------------------------------------------------- statistics


def rel(x, y):
    """(y - x) / (100 - x) for accuracies in percent; 0 where x is already 100."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x >= 100, 0.0, (y - x) / (100 - x))


@dataclasses.dataclass
class Stat:
    value: float
    low: float | None = None
    high: float | None = None
    std: float | None = None
    n: int = 1


def acc_stat(values: list[float]) -> Stat:
    v = np.asarray(values, float) * 100
    return Stat(float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else None, n=len(v))


def rel_stat(xs: list[float], ys: list[float], rng_seed: int = 0) -> Stat:
    """rel of the seed means; with several seeds, a 95% percentile bootstrap interval (each side's
    seeds resampled independently: the runs without and with the norm are not paired)."""
    x, y = np.asarray(xs, float) * 100, np.asarray(ys, float) * 100
    point = float(rel(x.mean(), y.mean()))
    if len(x) < 2 and len(y) < 2:
        return Stat(point, n=1)
    rng = np.random.default_rng(rng_seed)
    bx = rng.choice(x, (BOOTSTRAP, len(x))).mean(axis=1)
    by = rng.choice(y, (BOOTSTRAP, len(y))).mean(axis=1)
    lo, hi = np.percentile(rel(bx, by), [2.5, 97.5])
    return Stat(point, float(lo), float(hi), n=min(len(x), len(y)))


# ---------------------------------------------------------------- tables


@dataclasses.dataclass
class Table:
    id: str
    title: str
    headers: list[str]
    rows: list[list]  # cells: str labels, Stat values or None (missing)
    kind: str = "rel"  # how Stat cells print: rel | acc
    marks: set = dataclasses.field(default_factory=set)  # (row, col) cells to highlight
    notes: list[str] = dataclasses.field(default_factory=list)
    records: list[dict] = dataclasses.field(default_factory=list)  # tidy CSV lines


class Results:
    """Seed-level accuracies indexed for the table builders."""

    def __init__(self, df: pd.DataFrame, epochs: list[int] | None = None):
        self.df = df
        self.requested_epochs = epochs
        ep = df[df["epoch"].notna()]
        self._acc = {}
        for key, g in ep.groupby(["dataset", "arch", "norm", "optimizer", "split", "epoch"]):
            self._acc[key[:5] + (int(key[5]),)] = g.sort_values("seed")["accuracy"].tolist()
        self.by_step = df[df["step"].notna()]

    def acc(self, dataset, arch, norm, optimizer, split, epoch) -> list[float] | None:
        return self._acc.get((dataset, arch, norm, optimizer, split, epoch))

    def present(self, col: str, order) -> list[str]:
        have = set(self.df[self.df["epoch"].notna()][col])
        return [v for v in order if v in have]

    def pairs(self) -> list[tuple[str, str]]:
        """(dataset, arch) pairs in the thesis's order: arch-major, dataset-minor."""
        ep = self.df[self.df["epoch"].notna()]
        have = set(zip(ep["dataset"], ep["arch"]))
        return [(d, a) for a in ARCHS for d in DATASETS if (d, a) in have]

    def epochs(self, dataset, arch, split) -> list[int]:
        ep = self.df[(self.df["dataset"] == dataset) & (self.df["arch"] == arch) & (self.df["split"] == split)]
        have = sorted(int(e) for e in ep["epoch"].dropna().unique())
        if self.requested_epochs:
            return [e for e in self.requested_epochs if e in have]
        if len(have) <= 10:
            return have
        return sorted(set(e for e in THESIS_EPOCHS if e in have) | {have[-1]})

    def final_epoch(self, dataset, arch, norm, optimizer, split) -> int | None:
        eps = [k[5] for k in self._acc if k[:5] == (dataset, arch, norm, optimizer, split)]
        return max(eps) if eps else None


def _mark_extremes(table: Table, col_indices, smallest: bool, k: int = 3):
    for c in col_indices:
        vals = [(r, row[c].value) for r, row in enumerate(table.rows) if isinstance(row[c], Stat)]
        vals.sort(key=lambda t: t[1], reverse=not smallest)
        table.marks |= {(r, c) for r, _ in vals[:k]}


def _rec(table, dataset, arch, optimizer, norm, epoch, quantity, stat: Stat | None):
    """The tidy CSV lines of one cell: the value, and its std / interval where there are seeds."""
    if stat is None:
        return
    base = dict(table=table.id, dataset=dataset, arch=arch, optimizer=optimizer, norm=norm,
                epoch="" if epoch is None else epoch)
    lines = [(quantity, stat.value)]
    if stat.std is not None:
        lines.append((f"{quantity}_std", stat.std))
    if stat.low is not None:
        lines += [(f"{quantity}_ci_low", stat.low), (f"{quantity}_ci_high", stat.high)]
    table.records += [{**base, "quantity": q, "value": round(v, 6)} for q, v in lines]


def _rel_cell(res, d, a, norm, opt, split, epoch):
    x = res.acc(d, a, "none", opt, split, epoch)
    y = res.acc(d, a, norm, opt, split, epoch)
    return None if not x or not y else rel_stat(x, y)


def _acc_cell(res, d, a, norm, opt, split, epoch):
    v = res.acc(d, a, norm, opt, split, epoch)
    return None if not v else acc_stat(v)


def table1(res: Results, norm: str) -> Table | None:
    pairs = res.pairs()
    opts = res.present("optimizer", OPTIMIZERS)
    t = Table("table1", f"Table 1 — relative improvement from {norm} norm, test set, last epoch",
              ["optimizer"] + [nice(d, a) for d, a in pairs], [])
    any_value = False
    for opt in opts:
        row = [DISPLAY[opt]]
        for d, a in pairs:
            e = res.final_epoch(d, a, norm, opt, "test")
            stat = _rel_cell(res, d, a, norm, opt, "test", e) if e else None
            any_value |= stat is not None
            row.append(stat)
            _rec(t, d, a, opt, norm, None, "rel", stat)
        t.rows.append(row)
    return t if any_value else None


def _per_epoch_rows(t: Table, res: Results, d: str, a: str, eps: list[int], cell, quantity: str, norm: str):
    """One row per optimizer, one column per epoch, each cell from `cell(opt, epoch)`."""
    for opt in res.present("optimizer", OPTIMIZERS):
        row = [DISPLAY[opt]]
        for e in eps:
            stat = cell(opt, e)
            row.append(stat)
            _rec(t, d, a, opt, norm, e, quantity, stat)
        t.rows.append(row)


def tables_2_5(res: Results, norm: str) -> list[Table]:
    out = []
    for d, a in res.pairs():
        eps = res.epochs(d, a, "validation")
        t = Table("tables2-5", f"Tables 2–5 — {nice(d, a)}: relative improvement from {norm} norm, validation, "
                  "per epoch (* the 3 smallest in each column)", ["optimizer"] + [f"epoch {e}" for e in eps], [])
        _per_epoch_rows(t, res, d, a, eps, lambda opt, e: _rel_cell(res, d, a, norm, opt, "validation", e), "rel",
                        norm)
        _mark_extremes(t, range(1, len(eps) + 1), smallest=True)
        if t.records:
            out.append(t)
    return out


def table6(res: Results) -> list[Table]:
    pairs = res.pairs()
    if not pairs:
        return []
    d, a = ("cifar10", "cnn") if ("cifar10", "cnn") in pairs else pairs[0]
    eps = res.epochs(d, a, "validation")
    out = []
    for norm in res.present("norm", NORMS):
        t = Table("table6", f"Table 6 — {nice(d, a)}, {norm} norm: validation accuracy (%) per epoch "
                  "(* the top 3 in each column)", ["optimizer"] + [f"epoch {e}" for e in eps], [], kind="acc")
        _per_epoch_rows(t, res, d, a, eps, lambda opt, e, n=norm: _acc_cell(res, d, a, n, opt, "validation", e),
                        "accuracy", norm)
        _mark_extremes(t, range(1, len(eps) + 1), smallest=False)
        if t.records:
            out.append(t)
    return out


def tables_7_10(res: Results, norm: str) -> list[Table]:
    out = []
    pairs = set(res.pairs())
    for shallow, deep in (("mlp", "deep_mlp"), ("cnn", "deep_cnn")):
        for d in DATASETS:
            if (d, shallow) not in pairs or (d, deep) not in pairs:
                continue
            eps = [e for e in res.epochs(d, shallow, "validation") if e in res.epochs(d, deep, "validation")]
            headers = ["optimizer"]
            for e in eps:
                headers += [f"{e}: {ARCH_NAMES[shallow]}", f"{e}: {ARCH_NAMES[deep]}", f"{e}: deep − shallow"]
            t = Table("tables7-10", f"Tables 7–10 — {nice(d)}: relative improvement from {norm} norm, validation, "
                      f"{ARCH_NAMES[shallow]} vs {ARCH_NAMES[deep]}", headers, [])
            for opt in res.present("optimizer", OPTIMIZERS):
                row = [DISPLAY[opt]]
                for e in eps:
                    s = _rel_cell(res, d, shallow, norm, opt, "validation", e)
                    p = _rel_cell(res, d, deep, norm, opt, "validation", e)
                    diff = None if s is None or p is None else Stat(p.value - s.value)
                    row += [s, p, diff]
                    _rec(t, d, shallow, opt, norm, e, "rel", s)
                    _rec(t, d, deep, opt, norm, e, "rel", p)
                    _rec(t, d, deep, opt, norm, e, "rel_diff", diff)
                t.rows.append(row)
            if t.records:
                out.append(t)
    return out


def tables_11_12(res: Results, norm: str) -> list[Table]:
    out = []
    for d, a in res.pairs():
        split = "test" if res.epochs(d, a, "test") and len(res.epochs(d, a, "test")) > 1 else "validation"
        eps = res.epochs(d, a, split)
        t = Table("tables11-12", f"Tables 11–12 — {nice(d, a)}: {split} accuracy (%) without and with {norm} norm, "
                  "and rel", ["optimizer", "row"] + [f"epoch {e}" for e in eps], [], kind="mixed")
        for opt in res.present("optimizer", OPTIMIZERS):
            lines = {"none": [], norm: [], "rel": []}
            for e in eps:
                for n in ("none", norm):
                    stat = _acc_cell(res, d, a, n, opt, split, e)
                    lines[n].append(stat)
                    _rec(t, d, a, opt, n, e, "accuracy", stat)
                r = _rel_cell(res, d, a, norm, opt, split, e)
                lines["rel"].append(r)
                _rec(t, d, a, opt, norm, e, "rel", r)
            for label, cells in lines.items():
                t.rows.append([DISPLAY[opt], label] + cells)
        if any(q["quantity"] == "rel" for q in t.records):
            out.append(t)
    return out


def poster_tables(res: Results) -> list[Table]:
    df = res.by_step
    out = []
    for (d, a, opt), g in df[df["split"] == "test"].groupby(["dataset", "arch", "optimizer"]):
        steps = sorted(int(s) for s in g["step"].unique())
        t = Table("poster", f"Poster table — {nice(d, a)}, {DISPLAY[opt]}: test accuracy (%) every "
                  f"{steps[0]} steps", ["norm"] + [f"step {s}" for s in steps], [], kind="acc")
        for norm in [n for n in NORMS if n in set(g["norm"])]:
            row = [norm]
            for s in steps:
                v = g[(g["norm"] == norm) & (g["step"] == s)].sort_values("seed")["accuracy"].tolist()
                stat = acc_stat(v) if v else None
                row.append(stat)
                _rec(t, d, a, opt, norm, s, "accuracy", stat)
            t.rows.append(row)
        out.append(t)
    return out


def build_tables(df: pd.DataFrame, epochs: list[int] | None = None) -> list[Table]:
    """Every table of SPEC.md that the results allow, in the thesis's order."""
    res = Results(df, epochs)
    norms = [n for n in res.present("norm", NORMS) if n != "none"]
    has_none = "none" in res.present("norm", NORMS)
    tables: list[Table] = []
    if has_none:
        for norm in norms:
            t1 = table1(res, norm)
            tables += [t1] if t1 else []
        for norm in norms:
            tables += tables_2_5(res, norm)
    tables += table6(res)
    if has_none:
        for norm in norms:
            tables += tables_7_10(res, norm)
        for norm in norms:
            tables += tables_11_12(res, norm)
    tables += poster_tables(res)
    n_seeds = df.groupby(["dataset", "arch", "norm", "optimizer"])["seed"].nunique()
    multi = bool(len(n_seeds)) and n_seeds.max() > 1
    for t in tables:
        if any(c is None for row in t.rows for c in row[1:]):
            t.notes.append(f"{MISSING}: no finished run for this cell yet (the sweep may still be running).")
        if t.kind in ("rel", "mixed"):
            t.notes.append("rel = (y − x) / (100 − x), x = accuracy (%) without the norm, y = with it.")
        if multi:
            t.notes.append(f"Accuracies are means ± std over seeds; rel uses the seed means, [low, high] is a 95% "
                           f"bootstrap interval ({BOOTSTRAP} resamples of each side's seeds, percentile method).")
    return tables


# ---------------------------------------------------------------- rendering


def _fmt(stat, kind: str, fmt: str) -> str:
    if stat is None:
        return MISSING
    if isinstance(stat, str):
        return stat
    if kind == "acc":
        s = f"{stat.value:.2f}"
        if stat.std is not None:
            s += f" ± {stat.std:.2f}"
    else:
        s = f"{stat.value:.2f}"
        if stat.low is not None:
            s += f" [{stat.low:.2f}, {stat.high:.2f}]"
    return s


def _cells(t: Table, fmt: str) -> list[list[str]]:
    rows = []
    for r, row in enumerate(t.rows):
        out = []
        for c, cell in enumerate(row):
            kind = t.kind
            if kind == "mixed":
                kind = "rel" if row[1] == "rel" else "acc"
            s = _fmt(cell, kind, fmt)
            if fmt == "latex":
                s = s.replace("±", "$\\pm$").replace(MISSING, "--")
            if (r, c) in t.marks:
                s = {"markdown": f"**{s}**", "latex": f"\\textbf{{{s}}}"}.get(fmt, f"{s} *")
            out.append(s)
        rows.append(out)
    return rows


def render(tables: list[Table], fmt: str = "text") -> str:
    from tabulate import tabulate

    if fmt == "csv":
        recs = [r for t in tables for r in t.records]
        return pd.DataFrame.from_records(recs, columns=TIDY_COLUMNS).to_csv(index=False)
    if not tables:
        return "No finished runs to report yet.\n"
    tablefmt = {"text": "simple", "markdown": "pipe", "latex": "latex_raw"}[fmt]
    parts = []
    for t in tables:
        body = tabulate(_cells(t, fmt), headers=t.headers, tablefmt=tablefmt, disable_numparse=True)
        if fmt == "markdown":
            parts.append(f"### {t.title}\n\n{body}\n" + "".join(f"\n_{n}_\n" for n in t.notes))
        elif fmt == "latex":
            title = t.title.replace("%", "\\%").replace("&", "\\&")
            notes = "".join(f"\n% {n}" for n in t.notes)
            parts.append(f"% {title}\n{body.replace('%', chr(92) + '%')}{notes}\n")
        else:
            parts.append(f"{t.title}\n\n{body}\n" + "".join(f"  {n}\n" for n in t.notes))
    return "\n".join(parts)


# ---------------------------------------------------------------- the thesis's findings, checked


PLAIN, ADAPTIVE = ("sgd", "sgdm"), ("adam", "adagrad", "adadelta", "rmsprop", "adamw", "nadam")
DEEP = {"mlp": "deep_mlp", "cnn": "deep_cnn"}


def _mean(xs):
    return float(np.mean(xs)) if len(xs) else float("nan")


def findings(df: pd.DataFrame, norm: str = "batch") -> list[dict]:
    """SPEC.md's Study 1 conclusions (and the poster's), each checked against the data:
    {claim, verdict: supported | not supported | not testable, evidence}."""
    res = Results(df)
    out = []

    def add(claim, ok, evidence):
        verdict = "not testable" if ok is None else ("supported" if ok else "not supported")
        out.append({"claim": claim, "verdict": verdict, "evidence": evidence})

    pairs = res.pairs()
    opts = res.present("optimizer", OPTIMIZERS)
    first_rel, last_rel, final_test = {}, {}, {}

    def split_of(d, a):  # per-epoch claims read validation, else test (published tables often have only test)
        return "validation" if res.epochs(d, a, "validation") else "test"

    for d, a in pairs:
        sp = split_of(d, a)
        eps = res.epochs(d, a, sp)
        for opt in opts:
            if eps:
                r0 = _rel_cell(res, d, a, norm, opt, sp, eps[0])
                r1 = _rel_cell(res, d, a, norm, opt, sp, eps[-1])
                if r0 and r1:
                    first_rel[(d, a, opt)], last_rel[(d, a, opt)] = r0.value, r1.value
            e = res.final_epoch(d, a, norm, opt, "test")
            r = _rel_cell(res, d, a, norm, opt, "test", e) if e else None
            if r:
                final_test[(d, a, opt)] = r.value
    if first_rel:
        pos = [k for k, v in first_rel.items() if v > 0]
        worst = min(first_rel, key=first_rel.get)
        add(f"{norm} norm speeds up convergence for every optimizer (rel > 0 at the first reported epoch)",
            len(pos) == len(first_rel),
            f"rel > 0 for {len(pos)} of {len(first_rel)} (network, optimizer) pairs at the first reported epoch; lowest "
            f"{first_rel[worst]:.2f} ({OPTIMIZER_NAMES[worst[2]]}, {nice(worst[0], worst[1])})")
        first, last = _mean(list(first_rel.values())), _mean(list(last_rel.values()))
        add(f"{norm} norm helps most in the first epochs", first > last,
            f"mean rel {first:.2f} at the first reported epoch vs {last:.2f} at the last")
    else:
        add(f"{norm} norm speeds up convergence for every optimizer", None, f"no runs with and without {norm} norm")
    plain = [v for k, v in final_test.items() if k[2] in PLAIN]
    adaptive = [v for k, v in final_test.items() if k[2] in ADAPTIVE]
    if plain and adaptive:
        add(f"the more sophisticated the optimizer, the less {norm} norm helps",
            _mean(plain) > _mean(adaptive),
            f"mean test rel at the last epoch: SGD/SGDm {_mean(plain):.2f} vs adaptive methods {_mean(adaptive):.2f}")
    else:
        add(f"the more sophisticated the optimizer, the less {norm} norm helps", None,
            "needs SGD or SGDm and an adaptive optimizer, with and without the norm")
    diffs = [final_test[(d, DEEP[a], o)] - v for (d, a, o), v in final_test.items()
             if a in DEEP and (d, DEEP[a], o) in final_test]
    add(f"{norm} norm helps more on deep networks", None if not diffs else _mean(diffs) > 0,
        "no deep and shallow runs of the same dataset and optimizer" if not diffs else
        f"deep minus shallow test rel, mean over {len(diffs)} pairs: {_mean(diffs):+.2f}")
    chance = []
    for d, a in pairs:
        if a not in ("deep_mlp", "deep_cnn"):
            continue
        sp = split_of(d, a)
        eps = res.epochs(d, a, sp)
        for opt in ("sgd", "sgdm", "adadelta"):
            v = res.acc(d, a, "none", opt, sp, eps[0]) if eps else None
            if v:
                chance.append((opt, d, a, 100 * _mean(v)))
    add("deep networks without norm stay near chance (~10%) with SGD, SGDm, Adadelta early on",
        None if not chance else all(c[3] < 15 for c in chance),
        "no deep runs without norm" if not chance else
        "; ".join(f"{OPTIMIZER_NAMES[o]} {nice(d, a)} {v:.1f}%" for o, d, a, v in chance) + " at the first reported epoch")
    jumps = {}
    for n in ("none", norm):
        steps = []
        for d, a in pairs:
            sp = split_of(d, a)
            seq = [res.acc(d, a, n, "adam", sp, e) for e in res.epochs(d, a, sp)]
            if len(seq) > 1 and all(seq):
                means = [100 * _mean(s) for s in seq]
                steps += [abs(b - c) for b, c in zip(means[1:], means[:-1])]
        jumps[n] = steps
    if jumps["none"] and jumps[norm]:
        add(f"Adam + {norm} norm jumps from epoch to epoch more than Adam alone",
            _mean(jumps[norm]) > _mean(jumps["none"]),
            f"mean |change| of accuracy between epochs: {_mean(jumps[norm]):.2f} points with "
            f"{norm} norm vs {_mean(jumps['none']):.2f} without")
    steps = res.by_step[res.by_step["split"] == "test"]
    if len(steps) and {"none", "batch", "layer"} <= set(steps["norm"]):
        first = steps[steps["step"] == steps["step"].min()].groupby("norm")["accuracy"].mean() * 100
        add("BN and LN converge about equally fast, both faster than no normalization (poster)",
            min(first["batch"], first["layer"]) > first["none"]
            and abs(first["batch"] - first["layer"]) < min(first["batch"], first["layer"]) - first["none"],
            f"test accuracy at the first evaluation: batch {first['batch']:.1f}%, layer {first['layer']:.1f}%, "
            f"none {first['none']:.1f}%")
    return out


def render_findings(items: list[dict], fmt: str = "text") -> str:
    if fmt == "markdown":
        return "### Findings of the thesis, checked\n\n" + "".join(
            f"- **{f['verdict']}** — {f['claim']}: {f['evidence']}\n" for f in items)
    return "Findings of the thesis, checked against these results\n\n" + "".join(
        f"  [{f['verdict']}] {f['claim']}\n      {f['evidence']}\n" for f in items)
