"""The thesis's and the poster's tables, from a sweep's final runs or from published numbers.

Everything starts from one long table of accuracies (LONG_COLUMNS: one accuracy, a fraction, per
dataset, arch, norm, optimizer, learning rate, seed, epoch or step, and split; a cell's runs differ
in seed, so the lr only says which rate the seeds were trained at). `scan_runs` builds it from run
folders, `read_long_csv` from a file in the same format (`kbn export` writes it), and the table
builders turn it into `Table`s that render as text, markdown, LaTeX or tidy CSV.

Relative improvement of adding a norm (x: accuracy % without, y: with): rel = (y - x) / (100 - x).
With several seeds, accuracies are seed means (shown mean ± sd); an effect (rel, or the difference
in points) is the mean of the per-seed effects when both arms ran the same seeds (paired), with a
Student-t 95% interval (or a bootstrap one), and Welch's interval when they did not. Verdicts read
the intervals (Holm's correction for claims over several cells). The report opens with a summary per
norm: the effect, its verdict and the convergence speed-up of every cell.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import unicodedata
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from kbn.runlog import check_run, read_metrics
from kbn.config import ARCHS, DATASETS, NORMS, OPTIMIZER_NAMES, OPTIMIZERS

DISPLAY = OPTIMIZER_NAMES
from kbn.errors import ConfigError, KbnError

LONG_COLUMNS = ["dataset", "arch", "norm", "optimizer", "lr", "seed", "epoch", "split", "accuracy"]
# step replaces epoch for step-based runs; wall_time: the run's cumulative seconds at that evaluation
# (absent from published numbers)
OPTIONAL = ["step", "wall_time"]
CELL = ["dataset", "arch", "norm", "optimizer"]
TIDY_COLUMNS = ["table", "dataset", "arch", "optimizer", "norm", "epoch", "seed", "quantity", "value"]
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
               "val_loss", "val_accuracy", "test_loss", "test_accuracy", "wall_time", "status"]


@dataclasses.dataclass
class RunScan:
    """The final runs under a folder (a run table), and what was left out of it and why: a report
    whose numbers silently lost a run would look whole."""

    runs: pd.DataFrame
    skipped: list[tuple[Path, str]]  # run folders that claim to be finished but cannot be trusted
    unfinished: int  # run folders without result.json
    folders: int  # run folders seen (search trials not counted)
    sweep_problems: list[str] = dataclasses.field(default_factory=list)  # failed or lost trials of a sweep
    protocol: dict = dataclasses.field(default_factory=dict)  # see `read_protocol`

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
    found = {p.parent for name in ("config.json", "result.json") for p in logdir.rglob(name)}
    searched = sorted(f for f in found if "search" in f.relative_to(logdir).parts)
    folders = sorted(found - set(searched))
    records, skipped, unfinished, owner, settings = [], [], 0, {}, []
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
            settings.append(s)
    return RunScan(pd.DataFrame.from_records(records, columns=RUN_COLUMNS), skipped, unfinished, len(folders),
                   _sweep_problems(logdir), read_protocol(logdir, settings, searched))


def read_protocol(logdir: Path, final: list[dict], search_folders: list[Path]) -> dict:
    """How the numbers were made, as far as the folder says: the final runs' lengths and seeds (from
    their settings), the search's length, seeds and selection split (sweep.json, else the search
    trials' own config.json). Keys whose answer is not recorded are absent."""
    out = {"final": _lengths(final), "final_seeds": sorted({s["seed"] for s in final})}
    search = []
    for folder in search_folders:
        try:
            search.append(json.loads((folder / "config.json").read_text())["settings"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged trial says nothing about the protocol; status reports it
    if search:
        out["search"] = _lengths(search)
        out["search_seeds"] = sorted({s["seed"] for s in search if "seed" in s})
    try:
        sweep = json.loads((logdir / "sweep.json").read_text())
    except (OSError, ValueError):
        sweep = {}
    if isinstance(sweep, dict):
        if sweep.get("search_epochs") or sweep.get("search_total_steps"):
            out["search"] = ([f"{sweep['search_total_steps']} steps"] if sweep.get("search_total_steps")
                             else [f"{sweep['search_epochs']} epochs"])
        elif "search" not in out and sweep.get("epochs"):  # a sweep without search_epochs searches at full length
            full = sweep.get("total_steps")
            out["search"] = [f"{full} steps" if full else f"{sweep['epochs']} epochs"]
        for key in ("select_on", "search_seeds"):
            if sweep.get(key) is not None:
                out[key] = sweep[key]
    return out


def _lengths(settings: list[dict]) -> list[str]:
    """The distinct training lengths of runs' settings: '50 epochs', '50000 steps'."""
    out = set()
    for s in settings:
        if s.get("total_steps"):
            out.add((1, int(s["total_steps"])))
        elif s.get("epochs"):
            out.add((0, int(s["epochs"])))
    return [f"{v} {'steps' if k else 'epochs'}" for k, v in sorted(out)]


def protocol_line(protocol: dict | None) -> str:
    """One line: the search's length, selection split and seeds vs the final runs' length and seeds."""
    if not protocol:
        return "Protocol: not recorded with these numbers (read from a file of accuracies)."

    def length(items):
        unit = items[0].split()[1]
        return f"{' or '.join(i.split()[0] for i in items)} {unit}" if len({i.split()[1] for i in items}) == 1 \
            else " or ".join(items)

    search = protocol.get("search")
    parts = [f"learning rate searched with {length(search).replace(' epochs', '-epoch').replace(' steps', '-step')}"
             " trials" if search else "the learning-rate search is not recorded here"]
    if protocol.get("select_on"):
        parts.append(f"selected on {protocol['select_on']} accuracy")
    if protocol.get("search_seeds"):
        parts.append(f"search seeds {', '.join(map(str, protocol['search_seeds']))}")
    final = []
    if protocol.get("final"):
        final.append(length(protocol["final"]))
    if protocol.get("final_seeds"):
        final.append(f"seeds {', '.join(map(str, protocol['final_seeds']))}")
    return f"Protocol: {', '.join(parts)}; final runs: {', '.join(final) or 'not recorded'}."


def _sweep_problems(logdir: Path) -> list[str]:
    """A sweep folder's failed and unreadable trials: cells they hold have no final runs, and a report
    must say why rather than show a bare gap (damaged runs are already among the skipped)."""
    if not (logdir / "sweep.json").is_file():
        return []
    from kbn.plan import folder_progress, problem_lines

    try:
        state = folder_progress(logdir)
    except (KbnError, KeyError, TypeError, ValueError) as e:  # a hand-edited sweep.json must not stop a report
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
        part = runs[runs[col].notna()][["dataset", "arch", "norm", "optimizer", "lr", "seed", "epoch", "step",
                                        "wall_time", col]]
        parts.append(part.rename(columns={col: "accuracy"}).assign(split=split))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LONG_COLUMNS + OPTIONAL)
    # an epoch-based run's step is not its x axis
    df.loc[df["epoch"].notna(), "step"] = np.nan
    return _normalise(df[LONG_COLUMNS + OPTIONAL])


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
    if "wall_time" not in df:
        df["wall_time"] = np.nan
    for col in ("epoch", "step", "lr", "wall_time"):
        df[col] = df[col].astype(float)
    df["seed"] = df["seed"].astype(int)
    df["accuracy"] = df["accuracy"].astype(float)
    return df.reset_index(drop=True)


_OPT_BY_NAME = {**{k: k for k in OPTIMIZERS}, **{v.lower(): k for k, v in DISPLAY.items()}}


def _number(text) -> float:
    """A CSV field as a float; NaN when empty or not a number (range checks then reject it)."""
    try:
        return float(text) if text else np.nan
    except ValueError:
        return np.nan


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
    return _normalise(pd.DataFrame.from_records(records, columns=LONG_COLUMNS + OPTIONAL))


def _csv_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number in the file, fields) of every line that is not blank or a # comment."""
    try:
        text = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: Excel writes a byte-order mark
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
        raise ReportError(f"{where}: columns epoch and step: give one of them, not "
                          f"{'both' if given else 'neither'} (epoch {row.get('epoch') or 'empty'!r}, "
                          f"step {row.get('step') or 'empty'!r})")
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
    # optional columns: empty is absent (NaN); anything else must parse and lie in range (NaN fails)
    rec["lr"] = _number(row.get("lr"))
    if row.get("lr") and not 0 < rec["lr"] < np.inf:
        bad("lr", "give a positive number, or leave it empty")
    rec["wall_time"] = _number(row.get("wall_time"))
    if row.get("wall_time") and not 0 <= rec["wall_time"] < np.inf:
        bad("wall_time", "give the run's seconds so far (a number from 0), or leave it empty")
    return rec


def export_long(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The long format, split by x axis: {'epoch': ..., 'step': ...} (only those present)."""
    out = {}
    for axis in ("epoch", "step"):
        part = df[df[axis].notna()]
        if len(part):
            key = LONG_COLUMNS[:6]  # the cell, its lr and the seed
            part = part[key + [axis, "split", "accuracy"] + (["wall_time"] if part["wall_time"].notna().any()
                                                             else [])].copy()
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


ALPHA = 0.05  # 95% intervals; Holm's correction keeps a claim over several cells at this level
INTERVALS = ("t", "bootstrap")
ADVISED_SEEDS = 5


def rel(x, y):
    """(y - x) / (100 - x) for accuracies in percent; 0 where x is already 100."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x >= 100, 0.0, (y - x) / (100 - x))


@dataclasses.dataclass
class Stat:
    """A number with what is known of its uncertainty. Accuracies: mean and sd over seeds.
    Comparisons (the norm over none, or any contrast): the effect, its 95% interval [low, high],
    the per-seed effects when the seeds are paired, and how it was computed."""

    value: float
    low: float | None = None
    high: float | None = None
    std: float | None = None  # accuracies: sd over seeds; comparisons: spread of one seed's effect
    n: int = 1
    method: str = ""  # a METHODS key; "" for a value without an interval
    seeds: dict | None = None  # seed -> value (accuracies, or paired per-seed effects)
    p_win: float | None = None  # the share of seed pairs where the norm wins (ties count half)
    p: float | None = None  # two-sided p-value of "no effect", by the interval's method

    @property
    def interval(self) -> bool:
        return self.low is not None

    @property
    def paired(self) -> bool:
        return self.method.startswith("paired")


METHODS = {
    "paired t": "paired by seed (both arms of a seed share data order and initial weights): the mean of the "
                "per-seed values, Student-t 95% interval (n − 1 degrees of freedom)",
    "paired bootstrap": f"paired by seed: the mean of the per-seed values, 95% percentile bootstrap interval "
                        f"({BOOTSTRAP} resamples of the seeds)",
    "Welch": "unpaired (the arms' seeds differ): Welch's t-interval for the difference of the means; rel of the "
             "means with a delta-method standard error and Welch–Satterthwaite degrees of freedom",
    "unpaired bootstrap": f"unpaired (the arms' seeds differ): the effect of the means, 95% percentile bootstrap "
                          f"interval ({BOOTSTRAP} resamples of each arm's seeds)",
}


def _t(df: float, alpha: float = ALPHA) -> float:
    """t_{1 - alpha/2, df}. scipy comes with jax, a dependency of kbn, so it is always there."""
    from scipy import stats

    return float(stats.t.ppf(1 - alpha / 2, df))


def _t_p(mean: float, se: float, df: float) -> float:
    from scipy import stats

    if se == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * stats.t.sf(abs(mean / se), df))


def acc_stat(values, seeds=None) -> Stat:
    """Accuracies (fractions) as percent: mean ± sd over seeds."""
    v = np.asarray(values, float) * 100
    by_seed = dict(zip(seeds if seeds is not None else range(len(v)), map(float, v)))
    return Stat(float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else None, n=len(v), seeds=by_seed)


def _win(x: float, y: float) -> float:
    return 1.0 if y > x else 0.5 if y == x else 0.0


def _effect(quantity: str, x, y):
    """The norm's effect on accuracies in percent: 'diff' in points, or 'rel'."""
    return np.asarray(y, float) - np.asarray(x, float) if quantity == "diff" else rel(x, y)


def one_sample(values: dict, interval: str = "t", rng_seed: int = 0) -> Stat:
    """The mean of per-seed values (seed -> value) with a 95% interval; one value is a point alone."""
    seeds = sorted(values)
    v = np.array([values[s] for s in seeds], float)
    wins = float(np.mean([_win(0, x) for x in v]))
    if len(v) < 2:
        return Stat(float(v[0]), n=1, seeds=dict(values), p_win=wins)
    mean, sd, n = float(v.mean()), float(v.std(ddof=1)), len(v)
    se = sd / np.sqrt(n)
    if interval == "bootstrap":
        boot = np.random.default_rng(rng_seed).choice(v, (BOOTSTRAP, n)).mean(axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        p = min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0)))
        method = "paired bootstrap"
    else:
        half = _t(n - 1) * se
        lo, hi, p, method = mean - half, mean + half, _t_p(mean, se, n - 1), "paired t"
    return Stat(mean, float(lo), float(hi), sd, n, method, {s: float(x) for s, x in zip(seeds, v)}, wins, float(p))


def compare(xs: dict, ys: dict, quantity: str = "rel", interval: str = "t", rng_seed: int = 0) -> Stat:
    """The effect of adding the norm: accuracies (fractions) without (xs) and with it (ys), each
    seed -> accuracy. Same seeds in both arms: paired, the mean of the per-seed effects. Other
    seeds: unpaired (`_unpaired`). quantity: 'diff' (points, y - x) or 'rel' ((y - x) / (100 - x))."""
    x = {s: 100 * float(v) for s, v in xs.items()}
    y = {s: 100 * float(v) for s, v in ys.items()}
    if set(x) == set(y):
        per = {s: float(_effect(quantity, x[s], y[s])) for s in sorted(x)}
        stat = one_sample(per, interval, rng_seed)
        stat.p_win = float(np.mean([_win(x[s], y[s]) for s in per]))
    else:
        stat = _unpaired(np.array(list(x.values())), np.array(list(y.values())), quantity, interval, rng_seed)
    if quantity == "rel" and stat.interval:
        # rel <= 1 always; a symmetric interval past 1 would claim values that cannot be
        stat.high = min(stat.high, 1.0)
    return stat


def _unpaired(x: np.ndarray, y: np.ndarray, quantity: str, interval: str, rng_seed: int) -> Stat:
    """The effect of the arms' means when their seeds differ (no per-seed effect exists). The
    difference takes Welch's interval. rel = (ȳ - x̄)/(100 - x̄) is a smooth function of two
    independent means, so its standard error comes from the delta method (the gradient below) and
    its degrees of freedom from Welch–Satterthwaite, which reduces to Welch's interval for 'diff';
    a ratio's sampling distribution is skewed for tiny n, which the bootstrap option shows."""
    mx, my = float(x.mean()), float(y.mean())
    point = float(_effect(quantity, mx, my))
    wins = float(np.mean([_win(a, b) for a in x for b in y]))
    n = min(len(x), len(y))
    if n < 2 or (quantity == "rel" and mx >= 100):
        return Stat(point, n=n, p_win=wins)
    if interval == "bootstrap":
        rng = np.random.default_rng(rng_seed)
        bx = rng.choice(x, (BOOTSTRAP, len(x))).mean(axis=1)
        by = rng.choice(y, (BOOTSTRAP, len(y))).mean(axis=1)
        boot = _effect(quantity, bx, by)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        p = min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0)))
        return Stat(point, float(lo), float(hi), None, n, "unpaired bootstrap", None, wins, float(p))
    gx, gy = (-1.0, 1.0) if quantity == "diff" else ((my - 100) / (100 - mx) ** 2, 1 / (100 - mx))
    vx, vy = gx ** 2 * x.var(ddof=1) / len(x), gy ** 2 * y.var(ddof=1) / len(y)
    se = float(np.sqrt(vx + vy))
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1)) if se > 0 else n - 1
    half = _t(df) * se
    return Stat(point, point - half, point + half, se * np.sqrt(n), n, "Welch", None, wins, _t_p(point, se, df))


def contrast(a: Stat | None, b: Stat | None, interval: str = "t") -> Stat | None:
    """b − a for two Stats of per-seed values (two cells' rels, say): paired where their seeds are
    the same, else Welch on the values; a Stat without per-seed values gives a point alone."""
    if a is None or b is None:
        return None
    if a.seeds is None or b.seeds is None:
        return Stat(b.value - a.value, n=1)
    if set(a.seeds) == set(b.seeds):
        return one_sample({s: b.seeds[s] - a.seeds[s] for s in a.seeds}, interval)
    return _unpaired(np.array(list(a.seeds.values())), np.array(list(b.seeds.values())), "diff", interval, 0)


def verdict(stat: Stat) -> str:
    """A per-cell claim that the effect is positive: supported when its interval excludes 0 from
    below, contradicted when it lies below 0, else inconclusive; a single seed is a point estimate."""
    if not stat.interval:
        return "point estimate only"
    return "supported" if stat.low > 0 else "contradicted" if stat.high < 0 else "inconclusive"


def every_cell(cells: dict[str, Stat]) -> tuple[str, list[str]]:
    """The verdict on "the effect is positive in every cell", and the cells that decide it. Each
    cell is a test of "no effect"; Holm's step-down correction keeps the chance of any false
    rejection at ALPHA. Supported: every cell rejected upwards (the weakest decides); contradicted:
    some cell rejected downwards (they decide); inconclusive: the cells not resolved."""
    tested = {k: v for k, v in cells.items() if v.p is not None}
    if not tested:
        return "point estimate only", [k for k, v in cells.items() if v.value <= 0] or list(cells)
    rejected, m = [], len(cells)
    for i, (name, stat) in enumerate(sorted(tested.items(), key=lambda kv: kv[1].p)):
        if stat.p > ALPHA / (m - i):
            break
        rejected.append(name)
    down = [k for k in rejected if cells[k].value < 0]
    if down:
        return "contradicted", down
    if len(rejected) == m:
        return "supported", [max(rejected, key=lambda k: cells[k].p)]
    return "inconclusive", [k for k in cells if k not in rejected]


def seeds_to_resolve(stat: Stat, alpha: float = ALPHA, most: int = 1000) -> int | None:
    """The number of seeds n at which the t interval at the observed spread would exclude 0:
    t_{1 - alpha/2, n-1} * sd / sqrt(n) < |mean| (alpha = 0.05: the 95% interval); None if more
    than `most` (or no spread is known)."""
    if stat.std is None or not stat.interval:
        return None
    if stat.std == 0:
        return stat.n if stat.value else None
    n = 2
    while n <= most:
        if _t(n - 1, alpha) * stat.std / np.sqrt(n) < abs(stat.value):
            return n
        n = n + 1 if n < 50 else int(n * 1.1)
    return None


# ---------------------------------------------------------------- tables


@dataclasses.dataclass
class Table:
    id: str
    title: str
    headers: list[str]
    rows: list[list]  # cells: str labels, Stat or Summary values, or None (missing)
    kind: str = "rel"  # how Stat cells print: rel | acc | mixed | plain
    marks: set = dataclasses.field(default_factory=set)  # (row, col) cells to highlight
    notes: list[str] = dataclasses.field(default_factory=list)
    records: list[dict] = dataclasses.field(default_factory=list)  # tidy CSV lines
    label: tuple = ()  # what sets it apart from other tables of its id (dataset, network, norm): LaTeX labels
    mark: str = ""  # the text format's mark of a highlighted cell: ▼ the smallest, ▲ the largest
    mark_what: str = ""  # which cells are highlighted, for the footer: "the 3 smallest in each column"


class Results:
    """Seed-level accuracies indexed for the table builders."""

    def __init__(self, df: pd.DataFrame, epochs: list[int] | None = None, interval: str = "t"):
        if "wall_time" not in df:
            df = df.assign(wall_time=np.nan)
        self.df = df
        self.requested_epochs = epochs
        self.interval = interval
        self._acc, self._acc_step = self._index(df, "epoch"), self._index(df, "step")
        self.by_step = df[df["step"].notna()]
        self._splits = set(zip(df["dataset"], df["arch"], df["split"]))

    @staticmethod
    def _index(df: pd.DataFrame, axis: str) -> dict:
        """(dataset, arch, norm, optimizer, split, epoch or step) -> {seed: accuracy}."""
        out = {}
        for key, g in df[df[axis].notna()].groupby(["dataset", "arch", "norm", "optimizer", "split", axis]):
            g = g.sort_values("seed")
            out[key[:5] + (int(key[5]),)] = dict(zip(g["seed"].astype(int), g["accuracy"].astype(float)))
        return out

    def acc(self, dataset, arch, norm, optimizer, split, epoch) -> list[float] | None:
        v = self._acc.get((dataset, arch, norm, optimizer, split, epoch))
        return list(v.values()) if v else None

    def acc_by_seed(self, dataset, arch, norm, optimizer, split, epoch) -> dict | None:
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

    def last(self, dataset, arch, norm, optimizer, split) -> tuple[str, int] | None:
        """(axis, x) of a cell's last evaluation on `split`: its last epoch, else its last step."""
        e = self.final_epoch(dataset, arch, norm, optimizer, split)
        steps = [k[5] for k in self._acc_step if k[:5] == (dataset, arch, norm, optimizer, split)]
        return ("epoch", e) if e else ("step", max(steps)) if steps else None

    def at(self, dataset, arch, norm, optimizer, split, axis, x) -> dict | None:
        """{seed: accuracy} of a cell at one epoch or step."""
        return (self._acc if axis == "epoch" else self._acc_step).get((dataset, arch, norm, optimizer, split, x))

    def all_pairs(self) -> list[tuple[str, str]]:
        """(dataset, arch) pairs of epoch- and step-based runs, in the thesis's order."""
        have = {(d, a) for d, a, _ in self._splits}
        return [(d, a) for a in ARCHS for d in DATASETS if (d, a) in have]

    def present_all(self, col: str, order) -> list[str]:
        have = set(self.df[col])
        return [v for v in order if v in have]

    def has(self, dataset, arch, split) -> bool:
        return (dataset, arch, split) in self._splits

    def curves(self, dataset, arch, norm, optimizer, split) -> tuple[str, dict[int, dict[int, float]], dict]:
        """(x axis, seed -> {epoch or step -> accuracy}, seed -> seconds per epoch or step) of one
        cell, every evaluation (not only the reported epochs)."""
        df = self.df
        g = df[(df["dataset"] == dataset) & (df["arch"] == arch) & (df["norm"] == norm)
               & (df["optimizer"] == optimizer) & (df["split"] == split)]
        axis = "epoch" if g["epoch"].notna().any() else "step"
        g = g[g[axis].notna()]
        curves, pace = {}, {}
        for seed, s in g.groupby("seed"):
            s = s.sort_values(axis)
            curves[int(seed)] = dict(zip(s[axis].astype(int), s["accuracy"].astype(float)))
            timed = s[s["wall_time"].notna()]
            if len(timed):  # a diverged run's rows at chance after its last step have no time
                pace[int(seed)] = float(timed["wall_time"].iloc[-1] / timed[axis].iloc[-1])
        return axis, curves, pace


def _mark_extremes(table: Table, col_indices, smallest: bool, k: int = 3):
    """Highlight the k smallest (or largest) values of each column. The footer says which: a bare
    mark in a heading would be read as emphasis by markdown."""
    table.mark = "▼" if smallest else "▲"
    table.mark_what = f"the {k} {'smallest' if smallest else 'largest'} in each column"
    for c in col_indices:
        vals = [(r, row[c].value) for r, row in enumerate(table.rows) if isinstance(row[c], Stat)]
        vals.sort(key=lambda t: t[1], reverse=not smallest)
        table.marks |= {(r, c) for r, _ in vals[:k]}


def _rec(table, dataset, arch, optimizer, norm, epoch, quantity, stat):
    """The tidy CSV lines of one cell: the value, its n, std, interval, P(improvement) and per-seed
    values (quantity `<q>_seed`, the seed in the seed column) where there are seeds."""
    if stat is None:
        return
    base = dict(table=table.id, dataset=dataset, arch=arch, optimizer=optimizer, norm=norm,
                epoch="" if epoch is None else epoch, seed="")
    if not isinstance(stat, Stat):
        table.records.append({**base, "quantity": quantity, "value": stat})
        return
    lines = [(quantity, stat.value), (f"{quantity}_n", stat.n)]
    if stat.std is not None:
        lines.append((f"{quantity}_std", stat.std))
    if stat.interval:
        lines += [(f"{quantity}_ci_low", stat.low), (f"{quantity}_ci_high", stat.high)]
    table.records += [{**base, "quantity": q, "value": round(float(v), 6)} for q, v in lines]
    if stat.seeds and (stat.n > 1 or stat.interval):
        table.records += [{**base, "seed": s, "quantity": f"{quantity}_seed", "value": round(v, 6)}
                          for s, v in sorted(stat.seeds.items())]


def _rel_cell(res, d, a, norm, opt, split, epoch, quantity="rel"):
    """The norm's effect on one cell at one epoch (rel, or 'diff' in points), against none."""
    x = res.acc_by_seed(d, a, "none", opt, split, epoch)
    y = res.acc_by_seed(d, a, norm, opt, split, epoch)
    return None if not x or not y else compare(x, y, quantity, res.interval)


def _acc_cell(res, d, a, norm, opt, split, epoch):
    v = res.acc_by_seed(d, a, norm, opt, split, epoch)
    return None if not v else acc_stat(list(v.values()), list(v))


def table1(res: Results, norm: str) -> Table | None:
    pairs = res.pairs()
    opts = res.present("optimizer", OPTIMIZERS)
    t = Table("table1", f"Table 1 — relative improvement from {norm} norm, test set, last epoch",
              ["optimizer"] + [nice(d, a) for d, a in pairs], [], label=(norm,))
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
# ---------------------------------------------------------------- the answer: summary and convergence


MARKS = {"supported": "✓", "contradicted": "✗", "inconclusive": "?", "point estimate only": "·"}
# extra per-cell quantities of the summary: (name, fn(dataset, arch, norm, optimizer) -> float | None)
Extra = tuple[str, Callable[[str, str, str, str], "float | None"]]


def _first_reach(curve: dict[int, float], target: float) -> int | None:
    """The first epoch (or step) at which a curve reaches `target`, None if it never does."""
    return next((x for x in sorted(curve) if curve[x] >= target - 1e-9), None)


def _mean_curve(curves: dict[int, dict[int, float]]) -> dict[int, float]:
    """The seed-mean curve in percent, over the epochs every seed has."""
    common = set.intersection(*(set(c) for c in curves.values()))
    return {x: 100 * float(np.mean([c[x] for c in curves.values()])) for x in sorted(common)}


def convergence(res: Results, d: str, a: str, norm: str, opt: str, split: str = "validation") -> dict | None:
    """How fast each arm gets to the no-norm arm's final accuracy (seed mean) on `split`: epochs
    (or steps) to that target for the seed-mean curve and for each seed (None: not reached), the
    speed-up none ÷ norm, the same in seconds from each arm's measured seconds per epoch (None
    without timings), and the area under each curve as the mean accuracy over the evaluations
    (percent), with the norm's gain in it paired by seed. None without both arms."""
    axis, xc, xpace = res.curves(d, a, "none", opt, split)
    _, yc, ypace = res.curves(d, a, norm, opt, split)
    if not xc or not yc:
        return None
    xm, ym = _mean_curve(xc), _mean_curve(yc)
    if not xm or not ym:
        return None
    target = xm[max(xm)]
    out = {"axis": axis, "target": target, "epochs_none": _first_reach(xm, target),
           "epochs_norm": _first_reach(ym, target),
           "epochs_none_seed": {s: _first_reach({k: 100 * v for k, v in c.items()}, target) for s, c in xc.items()},
           "epochs_norm_seed": {s: _first_reach({k: 100 * v for k, v in c.items()}, target) for s, c in yc.items()}}
    out["speedup"] = out["epochs_none"] / out["epochs_norm"] if out["epochs_norm"] else None
    for arm, pace in (("none", xpace), ("norm", ypace)):
        reached = out[f"epochs_{arm}"]
        out[f"seconds_per_{axis}_{arm}"] = float(np.mean(list(pace.values()))) if pace else None
        out[f"seconds_{arm}"] = reached * out[f"seconds_per_{axis}_{arm}"] if pace and reached else None
    out["speedup_seconds"] = (out["seconds_none"] / out["seconds_norm"]
                              if out["seconds_none"] and out["seconds_norm"] else None)
    out["auc_none"], out["auc_norm"] = float(np.mean(list(xm.values()))), float(np.mean(list(ym.values())))
    auc = {arm: {s: float(np.mean(list(c.values()))) for s, c in cs.items()} for arm, cs in (("x", xc), ("y", yc))}
    out["auc_diff"] = compare(auc["x"], auc["y"], "diff", res.interval)
    return out


def _speed(c: dict | None, key: str = "speedup") -> str:
    if c is None:
        return MISSING
    if c[key] is None:
        return "not reached" if key == "speedup" or c["epochs_norm"] is None else MISSING
    return f"{c[key]:.1f}×"


def convergence_tables(res: Results, norm: str) -> list[Table]:
    """Per network: epochs (or steps) and seconds to reach the no-norm arm's final validation
    accuracy, the speed-ups, and the area under the validation curve."""
    out = []
    for d, a in res.all_pairs():
        split = _split_of(res, d, a)
        t = Table("convergence", f"Convergence — {nice(d, a)}, {norm} norm vs none: {split} accuracy, "
                  "time to reach none's final accuracy", ["optimizer", "target %", "epochs none", f"epochs {norm}",
                                                          "speed-up", "s none", f"s {norm}", "speed-up (s)",
                                                          "AUC none", f"AUC {norm}", "AUC gain (points)"], [],
                  kind="plain", label=(d, a, norm))
        for opt in res.present_all("optimizer", OPTIMIZERS):
            c = convergence(res, d, a, norm, opt, split)
            if c is None:
                continue
            never = "not reached"
            t.rows.append([DISPLAY[opt], f"{c['target']:.2f}", str(c["epochs_none"]), str(c["epochs_norm"] or never),
                           _speed(c), _secs(c["seconds_none"]), _secs(c["seconds_norm"]),
                           _speed(c, "speedup_seconds"), f"{c['auc_none']:.2f}", f"{c['auc_norm']:.2f}",
                           c["auc_diff"]])
            _convergence_records(t, d, a, opt, norm, c)
            axis = c["axis"]
        if t.rows:
            t.headers = [h.replace("epochs", "steps") if axis == "step" else h for h in t.headers]
            t.notes.append(f"target: the seed-mean final {split} accuracy without the norm; epochs: the first "
                           "evaluated epoch at which the seed-mean curve reaches it (per seed in the CSV); speed-up = "
                           f"epochs none ÷ epochs {norm}; s: epochs × each arm's measured seconds per epoch "
                           f"({MISSING}: no timings); AUC: the mean {split} accuracy over the evaluated epochs "
                           "(normalised area under the curve).")
            t.notes = [n.replace("epoch", "step") for n in t.notes] if axis == "step" else t.notes
            out.append(t)
    return out


def _secs(v: float | None) -> str:
    return MISSING if v is None else f"{v:.1f}"


def _convergence_records(t: Table, d, a, opt, norm, c: dict):
    """The convergence numbers of one cell in the tidy CSV (per-seed epochs to target included)."""
    for q in ("target", "epochs_none", "epochs_norm", "speedup", "seconds_none", "seconds_norm", "speedup_seconds",
              "auc_none", "auc_norm"):
        if c[q] is not None:
            _rec(t, d, a, opt, norm, None, q, round(float(c[q]), 6))
    _rec(t, d, a, opt, norm, None, "auc_diff", c["auc_diff"])
    base = dict(table=t.id, dataset=d, arch=a, optimizer=opt, norm=norm, epoch="")
    if len(c["epochs_none_seed"]) < 2:
        return
    for arm in ("none", "norm"):
        t.records += [{**base, "seed": s, "quantity": f"epochs_{arm}_seed", "value": "" if v is None else v}
                      for s, v in sorted(c[f"epochs_{arm}_seed"].items())]


@dataclasses.dataclass
class Summary:
    """One cell of the summary: the test-accuracy difference and rel with their intervals, the
    verdict on "the norm helps" (from the difference's interval), the convergence speed-up, and
    any extra quantities."""

    diff: Stat
    rel: Stat
    conv: dict | None
    extras: list[tuple[str, float]]

    @property
    def verdict(self) -> str:
        return verdict(self.diff)

    def text(self, fmt: str) -> str:
        mark = MARKS[self.verdict]  # LaTeX: latex_text makes the marks and the numbers safe
        parts = [f"{mark} {_signed(self.diff)} pts", f"rel {_signed(self.rel, plus=False)}"]
        if self.diff.n > 1 and self.diff.p_win is not None:
            parts.append(f"P(win) {self.diff.p_win:.2f}")
        if self.conv is not None:
            seconds = self.conv["speedup_seconds"]
            parts.append(f"speed {_speed(self.conv)}" + (f" ({seconds:.1f}× in time)" if seconds else ""))
        parts += [f"{name} {value:+.2f}" for name, value in self.extras]
        return "; ".join(parts)


def _signed(s: Stat, plus: bool = True) -> str:
    f = "{:+.2f}" if plus else "{:.2f}"
    return f.format(s.value) + (f" [{f.format(s.low)}, {f.format(s.high)}]" if s.interval else "")


def summary_tables(res: Results, extra: list[Extra] = ()) -> list[Table]:
    """One table per norm: rows optimizer, columns dataset + network, each cell a `Summary` of the
    test accuracy at the last epoch. `extra` adds named per-cell quantities to every cell."""
    out = []
    if "none" not in res.present_all("norm", NORMS):
        return out
    for norm in [n for n in res.present_all("norm", NORMS) if n != "none"]:
        pairs = res.all_pairs()
        t = Table("summary", f"Summary — does {norm} norm help? Test accuracy at the last epoch, with minus "
                  "without", ["optimizer"] + [nice(d, a) for d, a in pairs], [], kind="summary", label=(norm,))
        for opt in res.present_all("optimizer", OPTIMIZERS):
            row = [DISPLAY[opt]]
            for d, a in pairs:
                cell = _summary_cell(res, d, a, norm, opt, extra)
                row.append(cell)
                _summary_records(t, d, a, opt, norm, cell)
            t.rows.append(row)
        if t.records:
            t.notes.append("Each cell: mark, test-accuracy difference in points [95% interval], rel [interval], "
                           "P(win) = the share of seed pairs where the norm wins (ties count half), "
                           "speed = epochs for none to reach its final validation accuracy (test where no "
                           "validation is recorded) ÷ epochs for the norm (in time: seconds, from each arm's "
                           "seconds per epoch). "
                           "✓ helps (the difference's interval is above 0), ✗ hurts (below 0), ? inconclusive "
                           "(it holds 0), · one seed (a point estimate).")
            out.append(t)
    return out


def _summary_cell(res: Results, d, a, norm, opt, extra) -> Summary | None:
    diff = _final_test(res, d, a, norm, opt, "diff")
    if diff is None:
        return None
    extras = [(name, v) for name, fn in extra if (v := fn(d, a, norm, opt)) is not None]
    return Summary(diff, _final_test(res, d, a, norm, opt),
                   convergence(res, d, a, norm, opt, _split_of(res, d, a)), extras)


def _summary_records(t: Table, d, a, opt, norm, cell: Summary | None):
    """Tidy lines of a summary cell; verdict is 1 (helps), -1 (hurts), 0 (inconclusive), absent
    for one seed."""
    if cell is None:
        return
    _rec(t, d, a, opt, norm, None, "diff", cell.diff)
    _rec(t, d, a, opt, norm, None, "rel", cell.rel)
    if cell.diff.p_win is not None:
        _rec(t, d, a, opt, norm, None, "p_improvement", round(cell.diff.p_win, 6))
    code = {"supported": 1, "contradicted": -1, "inconclusive": 0}.get(cell.verdict)
    if code is not None:
        _rec(t, d, a, opt, norm, None, "verdict", code)
    if cell.conv is not None:
        for q in ("speedup", "speedup_seconds"):
            if cell.conv[q] is not None:
                _rec(t, d, a, opt, norm, None, q, round(cell.conv[q], 6))
    for name, value in cell.extras:
        _rec(t, d, a, opt, norm, None, name, value)


# ---------------------------------------------------------------- the thesis's tables


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
                  "per epoch", ["optimizer"] + [f"epoch {e}" for e in eps], [], label=(d, a, norm))
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
        arm = "without normalization" if norm == "none" else f"with {norm} norm"
        t = Table("table6", f"Table 6 — {nice(d, a)} {arm}: validation accuracy (%) per epoch",
                  ["optimizer"] + [f"epoch {e}" for e in eps], [], kind="acc", label=(d, a, norm))
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
                      f"{ARCH_NAMES[shallow]} vs {ARCH_NAMES[deep]}", headers, [], label=(d, shallow, deep, norm))
            for opt in res.present("optimizer", OPTIMIZERS):
                row = [DISPLAY[opt]]
                for e in eps:
                    s = _rel_cell(res, d, shallow, norm, opt, "validation", e)
                    p = _rel_cell(res, d, deep, norm, opt, "validation", e)
                    diff = contrast(s, p, res.interval)
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
                  "and rel", ["optimizer", "row"] + [f"epoch {e}" for e in eps], [], kind="mixed", label=(d, a, norm))
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
                  f"{steps[0]} steps", ["norm"] + [f"step {s}" for s in steps], [], kind="acc", label=(d, a, opt))
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


def build_tables(df: pd.DataFrame, epochs: list[int] | None = None, interval: str = "t",
                 protocol: dict | None = None, extra: list[Extra] = ()) -> list[Table]:
    """The answer first (a summary per norm, the protocol under it, then convergence speed), then
    every table of SPEC.md that the results allow, in the thesis's order. `protocol`: what
    `read_protocol` found (None for numbers read from a file)."""
    res = Results(df, epochs, interval)
    norms = [n for n in res.present("norm", NORMS) if n != "none"]
    has_none = "none" in res.present("norm", NORMS)
    tables: list[Table] = summary_tables(res, extra)
    for t in tables:
        t.notes.append(protocol_line(protocol))
    if "none" in res.present_all("norm", NORMS):  # step-based runs (the poster's) too
        for norm in [n for n in res.present_all("norm", NORMS) if n != "none"]:
            tables += convergence_tables(res, norm)
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
    for t in tables:
        if any(c is None for row in t.rows for c in row[1:]):
            t.notes.append(f"{MISSING}: no finished run for this cell yet (the sweep may still be running).")
        if t.kind in ("rel", "mixed", "summary"):
            t.notes.append("rel = (y − x) / (100 − x), x = accuracy (%) without the norm, y = with it.")
        t.notes += _method_notes(t)
    return tables


def _stats_of(t: Table) -> list[Stat]:
    out = []
    for row in t.rows:
        for c in row[1:]:
            out += [c.diff, c.rel] if isinstance(c, Summary) else [c] if isinstance(c, Stat) else []
    return out


def _method_notes(t: Table) -> list[str]:
    """The footer's account of the numbers: n, how the intervals were made, whether the seeds were
    paired, and a warning when there are too few seeds for a narrow interval."""
    stats = _stats_of(t)
    if not stats:
        return []
    ns = sorted({s.n for s in stats})
    n = f"n = {ns[0]} seed{'s' if ns[0] > 1 else ''}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} seeds"
    if ns[-1] == 1:
        return ["one seed per cell (n = 1): every value is a point estimate, with no interval."]
    lines = []
    if t.kind in ("acc", "mixed"):
        lines.append(f"Accuracies are means ± sd over seeds ({n} per cell).")
    methods = [m for m in METHODS if any(s.method == m for s in stats)]
    if methods:
        lines += [f"Effects ({n} per cell): {METHODS[m]}." for m in methods]
    unpaired = sum(s.method in ("Welch", "unpaired bootstrap") for s in stats)
    if unpaired:
        lines.append(f"{unpaired} value(s) come from unpaired seeds: the arms were run with different seeds.")
    if any(not s.interval and s.n == 1 for s in stats):
        lines.append("Cells with one seed show a point estimate alone.")
    if methods and 1 < ns[0] < ADVISED_SEEDS:
        lines.append(f"n = {ns[0]} seeds: intervals are wide; {ADVISED_SEEDS} or more are advised.")
    if t.kind == "summary":
        lines.append("A mark reads each cell's own 95% interval; the findings below correct for testing several "
                     "cells at once (Holm).")
    return lines


# ---------------------------------------------------------------- rendering


def _fmt(stat, kind: str, fmt: str) -> str:
    if stat is None:
        return MISSING
    if isinstance(stat, str):
        return stat
    if isinstance(stat, Summary):
        return stat.text(fmt)
    if kind == "acc":
        s = f"{stat.value:.2f}"
        if stat.std is not None:
            s += f" ± {stat.std:.2f}"
    else:
        s = f"{stat.value:.2f}"
        if stat.interval:
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
            s = _latex_cell(cell, kind) if fmt == "latex" else _fmt(cell, kind, fmt)
            if (r, c) in t.marks:
                # \boldmath: the numbers are in math mode, which \bfseries alone leaves light
                s = {"markdown": f"**{s}**", "latex": f"{{\\bfseries\\boldmath {s}}}"}.get(fmt, f"{s} {t.mark}")
            out.append(s)
        rows.append(out)
    return rows


def _notes(t: Table, fmt: str) -> list[str]:
    """A table's footer in one format: its notes, and what its highlighted cells are (a trailing
    mark in text, bold in markdown and LaTeX)."""
    if not t.marks:
        return t.notes
    how = f"{t.mark} marks" if fmt == "text" else "Bold:"
    return t.notes + [f"{how} {t.mark_what}."]


def render(tables: list[Table], fmt: str = "text") -> str:
    from tabulate import tabulate

    if fmt == "csv":
        recs = [r for t in tables for r in t.records]
        return pd.DataFrame.from_records(recs, columns=TIDY_COLUMNS).to_csv(index=False)
    if not tables:
        return "No finished runs to report yet.\n"
    if fmt == "latex":
        return "\n".join(_latex_table(t, label) for t, label in zip(tables, latex_labels(tables)))
    tablefmt = {"text": "simple", "markdown": "pipe"}[fmt]
    parts = []
    for t in tables:
        body = tabulate(_cells(t, fmt), headers=t.headers, tablefmt=tablefmt, disable_numparse=True)
        notes = _notes(t, fmt)
        if fmt == "markdown":
            parts.append(f"### {t.title}\n\n{body}\n" + "".join(f"\n_{n}_\n" for n in notes))
        else:
            parts.append(f"{t.title}\n\n{body}\n" + "".join(f"  {n}\n" for n in notes))
    return "\n".join(parts)


# ---------------------------------------------------------------- LaTeX

# What a document that \input's the fragments needs in its preamble (booktabs: the rules; graphicx:
# \resizebox; amssymb: \checkmark, \boxtimes and the triangles). All three come with Debian's
# texlive-latex-base and texlive-latex-recommended.
LATEX_PACKAGES = ("booktabs", "graphicx", "amssymb")
# Text-mode replacements: the ten LaTeX specials, the characters OT1 fonts lack (< > | would print
# as ¡ ¿ —), and the Unicode the reports print, so the output is ASCII and pdflatex needs no
# inputenc setup. `$` goes through math: \$ in text asks for a TS1 glyph, a bitmap font on a bare TeX.
LATEX_CHARS = {
    "\\": "\\textbackslash{}", "{": "\\{", "}": "\\}", "$": "$\\$$", "&": "\\&", "#": "\\#", "_": "\\_",
    "%": "\\%", "^": "\\textasciicircum{}", "~": "\\textasciitilde{}", "<": "\\textless{}", ">": "\\textgreater{}",
    "|": "\\textbar{}", '"': "''", "—": "---", "–": "--", "−": "$-$", "×": "$\\times$", "÷": "$\\div$",
    "Δ": "$\\Delta$", "≥": "$\\geq$", "≤": "$\\leq$", "±": "$\\pm$", "≈": "$\\approx$", "→": "$\\rightarrow$",
    "✓": "\\checkmark{}", "✗": "$\\boxtimes$", "·": "$\\cdot$", "▲": "$\\blacktriangle$",
    "▼": "$\\blacktriangledown$", "…": "\\ldots{}", "‘": "`", "’": "'", "“": "``", "”": "''", "\u00a0": "~",
}
_NUM = r"[-+−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_LATEX_TOKEN = re.compile(
    rf"(?<![\w.])\[\s*(?P<lo>{_NUM})\s*,\s*(?P<hi>{_NUM})\s*\]"  # an interval [a, b]
    rf"|(?<![\w.])(?P<mean>{_NUM})\s*±\s*(?P<sd>{_NUM})(?![\w.])"  # mean ± sd
    # a signed number, or one with an exponent; not the 10 of CIFAR-10 or a range's end
    r"|(?<![\w.\-−+])(?P<num>[-−+]\d+(?:\.\d+)?(?:e[-+]?\d+)?|\d+(?:\.\d+)?e[-+]?\d+)(?![\w.])"
    r"|(?P<ch>[^\x20-\x7e]|[\\{}$&#_%^~<>|\"])")


def _latex_num(text: str) -> str:
    """A number for math mode: a true minus sign, and 1e-05 as 1\times10^{-5}."""
    text = text.replace("−", "-")
    mantissa, _, exp = text.partition("e")
    return mantissa + (f"\\times10^{{{int(exp)}}}" if exp else "")


def _latex_char(ch: str) -> str:
    """One character made safe; Unicode the table does not know falls back to its ASCII letters."""
    if ch in LATEX_CHARS:
        return LATEX_CHARS[ch]
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return "".join(LATEX_CHARS.get(c, c) for c in plain) or "?"


def latex_text(text: str) -> str:
    """Report text as LaTeX text: specials escaped, Unicode made pdflatex-safe, and numbers typeset:
    negative numbers with a true minus, intervals as $[a, b]$, mean ± sd as $m \\pm s$."""

    def one(m: re.Match) -> str:
        if m["lo"] is not None:
            return f"$[{_latex_num(m['lo'])}, {_latex_num(m['hi'])}]$"
        if m["mean"] is not None:
            return f"${_latex_num(m['mean'])} \\pm {_latex_num(m['sd'])}$"
        if m["num"] is not None:
            return f"${_latex_num(m['num'])}$"
        return _latex_char(m["ch"])

    return _LATEX_TOKEN.sub(one, text)


def _latex_safe_start(tex: str) -> str:
    """A cell or line must not open with '[': after \\\\ or \\item, LaTeX would read it as an option."""
    return "{}" + tex if tex.startswith("[") else tex


def _latex_cell(cell, kind: str) -> str:
    """One table cell. A summary cell's parts go on lines of their own (a nested tabular), which
    keeps a summary of several networks about a third as wide."""
    if isinstance(cell, Summary):
        lines = [_latex_safe_start(latex_text(part)) for part in cell.text("text").split("; ")]
        return "\\begin{tabular}[t]{@{}l@{}}" + " \\\\ ".join(lines) + "\\end{tabular}"
    return _latex_safe_start(latex_text(_fmt(cell, kind, "text")))


def latex_labels(tables: list[Table]) -> list[str]:
    """Stable \\label keys, one per table, from its id and what sets it apart (dataset, network,
    norm): tab:kbn-summary-batch, tab:kbn-table6-mnist-mlp-none. A repeat gets -2, -3, ..."""
    out, seen = [], {}
    for t in tables:
        words = "-".join([t.id, *map(str, t.label)]).lower().replace("_", "-")
        key = "tab:kbn-" + re.sub(r"[^a-z0-9-]+", "-", words).strip("-")
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}-{seen[key]}")
    return out


def _latex_caption(title: str) -> str:
    """The caption: LaTeX numbers the tables itself, so the thesis's own number moves to the end
    ("Table 6 — X" becomes "X (the thesis's Table 6)")."""
    m = re.match(r"(Tables? [\d–]+) — (.+)", title)
    if m:
        title = f"{m[2][0].upper()}{m[2][1:]} (the thesis's {m[1]})"
    return latex_text(title)


def _latex_table(t: Table, label: str) -> str:
    """One table as a float: caption and label above, booktabs rules, the notes in small print under
    the tabular. \\resizebox shrinks a table wider than the line to fit it and leaves a narrow one at
    its size (the \\ifdim): tabular* could only squeeze the space between columns, which is not
    enough for Tables 7-10 (three columns per epoch) or a summary of many networks."""
    rows = _cells(t, "latex")
    align = "".join("l" if c == 0 or t.kind == "summary" or all(not _numeric(r[c]) for r in t.rows) else "r"
                    for c in range(len(t.headers)))
    lines = [" & ".join(latex_text(h) for h in t.headers) + " \\\\", "\\midrule"]
    # a summary's rows are several lines tall: a little space keeps them apart
    gap = "\\addlinespace\n" if t.kind == "summary" else ""
    lines += [gap * (i > 0) + " & ".join(r) + " \\\\" for i, r in enumerate(rows)]
    notes = "".join(f"{latex_text(n)}\\par\n" for n in _notes(t, "latex"))
    return (f"\\begin{{table}}[htbp]\n\\centering\n\\caption{{{_latex_caption(t.title)}}}\n\\label{{{label}}}\n"
            "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            f"\\begin{{tabular}}{{{align}}}\n\\toprule\n" + "\n".join(lines) + "\n\\bottomrule\n\\end{tabular}}\n"
            + (f"\\par\\smallskip\n{{\\footnotesize\\raggedright\n{notes}}}\n" if notes else "")
            + "\\end{table}\n")


def _numeric(cell) -> bool:
    """Whether a cell holds a number (right-aligned in LaTeX) rather than a label."""
    if cell is None or isinstance(cell, (Stat, Summary)):
        return cell is not None
    return bool(re.match(r"[-+−]?\d", str(cell)))


def latex_document(title: str, tables_tex: str, findings_tex: str = "") -> str:
    """A whole pdflatex document: the tables (render's LaTeX), then the findings (render_findings's).
    Dozens of tables and little text: the floats queue beyond LaTeX's 18 (\\extrafloats), and the
    \\clearpage that puts them before the findings flushes them all at once, one output cycle each
    (\\maxdeadcycles, 100 by default: 120 tables stopped with "Output loop---100 consecutive dead
    cycles")."""
    packages = "".join(f"\\usepackage{{{p}}}\n" for p in LATEX_PACKAGES)
    floats = tables_tex.count("\\begin{table}")
    return ("\\documentclass{article}\n\\usepackage[margin=2cm]{geometry}\n" + packages
            + "\\renewcommand{\\topfraction}{0.95}\\renewcommand{\\bottomfraction}{0.95}\n"
            "\\renewcommand{\\textfraction}{0.05}\\renewcommand{\\floatpagefraction}{0.7}\n"
            "\\setcounter{topnumber}{9}\\setcounter{bottomnumber}{9}\\setcounter{totalnumber}{9}\n"
            f"\\extrafloats{{{floats + 20}}}\\maxdeadcycles={10 * floats + 100}\n"
            f"\\title{{{latex_text(title)}}}\n\\date{{}}\n\\begin{{document}}\n\\maketitle\n"
            f"{tables_tex}\n" + (f"\\clearpage\n{findings_tex}" if findings_tex else "") + "\\end{document}\n")


# ---------------------------------------------------------------- the thesis's findings, checked


PLAIN, ADAPTIVE = ("sgd", "sgdm"), ("adam", "adagrad", "adadelta", "rmsprop", "adamw", "nadam")
DEEP = {"mlp": "deep_mlp", "cnn": "deep_cnn"}
CHANCE = 15.0  # percent: "near chance" for 10 classes (chance itself is 10%)


def _name(d, a, opt=None) -> str:
    return nice(d, a) if opt is None else f"{OPTIMIZER_NAMES[opt]}, {nice(d, a)}"


def _split_of(res: Results, d, a) -> str:
    """Per-epoch claims read validation, else test (published tables often have only test)."""
    return "validation" if res.has(d, a, "validation") else "test"


def _final_test(res: Results, d, a, norm, opt, quantity="rel") -> Stat | None:
    """The norm's effect on test accuracy at the cell's last epoch (or step)."""
    last = res.last(d, a, norm, opt, "test")
    x, y = (res.at(d, a, n, opt, "test", *last) for n in ("none", norm)) if last else (None, None)
    return compare(x, y, quantity, res.interval) if x and y else None


def _pool(stats: list[Stat | None]) -> Stat | None:
    """The mean of several cells' per-seed values, seed by seed (their common seeds); a point when
    some cell has no per-seed values."""
    stats = [s for s in stats if s is not None]
    if not stats:
        return None
    if any(s.seeds is None for s in stats):
        return Stat(float(np.mean([s.value for s in stats])))
    common = set.intersection(*(set(s.seeds) for s in stats))
    if not common:
        return Stat(float(np.mean([s.value for s in stats])))
    per = {k: float(np.mean([s.seeds[k] for s in stats])) for k in sorted(common)}
    return Stat(float(np.mean(list(per.values()))), n=len(per), seeds=per)


def _claim(claim: str, cells: dict[str, Stat], what: str, missing: str, unit: str = "") -> dict:
    """{claim, verdict, evidence, cells} for a claim that `what` is positive in every cell (Holm's
    correction across them); `cells` names the cells that decide the verdict."""
    cells = {k: v for k, v in cells.items() if v is not None}
    if not cells:
        return {"claim": claim, "verdict": "not testable", "evidence": missing, "cells": []}
    v, deciding = every_cell(cells)
    listed = "; ".join(f"{k}: {_signed(cells[k])}{unit}" for k in deciding)
    n = len(cells)
    if v == "point estimate only":
        holds = all(c.value > 0 for c in cells.values())
        evidence = (f"{what}; one seed, so no interval: at the point estimates the claim "
                    f"{'holds in all' if holds else 'fails in'} {n if holds else len(deciding)} of {n} cell(s)"
                    + ("" if holds else f": {listed}"))
    elif v == "supported":
        evidence = f"{what}; above 0 in all {n} cell(s) after Holm's correction; the weakest: {listed}"
    elif v == "contradicted":
        evidence = f"{what}; below 0 after Holm's correction in {len(deciding)} of {n} cell(s): {listed}"
    else:
        # Holm's last step tests the k unresolved cells at ALPHA / k at the least
        needs = [seeds_to_resolve(cells[k], ALPHA / len(deciding)) for k in deciding]
        more = (f"about {max(needs)} seeds would resolve it at the observed spread" if all(needs)
                else "no practical number of seeds would resolve it at the observed spread (the effect is near 0)")
        evidence = f"{what}; not resolved in {len(deciding)} of {n} cell(s) after Holm's correction: {listed}; {more}"
    return {"claim": claim, "verdict": v, "evidence": evidence, "cells": deciding}


def claim_improves(res: Results, norm: str) -> dict:
    """The answer itself: the norm raises test accuracy at the last epoch, for every optimizer."""
    cells = {_name(d, a, o): _final_test(res, d, a, norm, o, "diff") for d, a in res.all_pairs()
             for o in res.present_all("optimizer", OPTIMIZERS)}
    return _claim(f"{norm} norm improves test accuracy for every optimizer", cells,
                  "test-accuracy difference with − without, at the last epoch, in points",
                  f"no runs with and without {norm} norm", " pts")


def claim_faster(res: Results, norm: str) -> dict:
    """Thesis hypothesis 1: faster convergence, measured as the gain in area under the validation
    curve (paired by seed); the speed-ups to none's final accuracy are given beside it."""
    cells, speed, never = {}, [], 0
    for d, a in res.all_pairs():
        for o in res.present_all("optimizer", OPTIMIZERS):
            c = convergence(res, d, a, norm, o, _split_of(res, d, a))
            if c is not None:
                cells[_name(d, a, o)] = c["auc_diff"]
                speed += [c["speedup"]] if c["speedup"] else []
                never += c["speedup"] is None
    f = _claim(f"{norm} norm speeds up convergence for every optimizer", cells,
               "gain in the area under the validation curve (mean accuracy over the epochs), in points",
               f"no runs with and without {norm} norm", " pts")
    if speed:
        f["evidence"] += (f". Epochs to reach none's final validation accuracy, none ÷ {norm}: {min(speed):.1f}× to "
                          f"{max(speed):.1f}× (median {np.median(speed):.1f}×)"
                          + (f"; not reached with the norm in {never} cell(s)" if never else ""))
    return f


def claim_early(res: Results, norm: str) -> dict:
    """rel is larger at the first reported epoch than at the last, cell by cell."""
    cells = {}
    for d, a in res.pairs():
        sp = _split_of(res, d, a)
        eps = res.epochs(d, a, sp)
        for o in res.present("optimizer", OPTIMIZERS):
            if len(eps) > 1:
                first, last = (_rel_cell(res, d, a, norm, o, sp, e) for e in (eps[0], eps[-1]))
                cells[_name(d, a, o)] = contrast(last, first, res.interval)
    return _claim(f"{norm} norm helps most in the first epochs", cells,
                  "rel at the first reported epoch minus rel at the last", f"needs several epochs with and without "
                  f"{norm} norm")


def claim_sophisticated(res: Results, norm: str) -> dict:
    """Thesis hypothesis 2: per network, the mean test rel of SGD and SGDm exceeds that of the
    adaptive methods (seed by seed where the seeds match)."""
    cells = {}
    for d, a in res.pairs():
        plain = _pool([_final_test(res, d, a, norm, o) for o in PLAIN])
        adaptive = _pool([_final_test(res, d, a, norm, o) for o in ADAPTIVE])
        cells[_name(d, a)] = contrast(adaptive, plain, res.interval)
    return _claim(f"the more sophisticated the optimizer, the less {norm} norm helps", cells,
                  "test rel at the last epoch, SGD/SGDm mean minus adaptive methods' mean",
                  "needs SGD or SGDm and an adaptive optimizer, with and without the norm")


def claim_deep(res: Results, norm: str) -> dict:
    """Thesis hypothesis 3: test rel is larger on the deep network than on its shallow counterpart."""
    pairs = set(res.pairs())
    cells = {f"{OPTIMIZER_NAMES[o]}, {nice(d)} {ARCH_NAMES[a]} → {ARCH_NAMES[DEEP[a]]}":
             contrast(_final_test(res, d, a, norm, o), _final_test(res, d, DEEP[a], norm, o), res.interval)
             for d, a in sorted(pairs) if a in DEEP and (d, DEEP[a]) in pairs
             for o in res.present("optimizer", OPTIMIZERS)}
    return _claim(f"{norm} norm helps more on deep networks", cells, "deep minus shallow test rel at the last epoch",
                  "no deep and shallow runs of the same dataset and optimizer")


def claim_deep_needs(res: Results, norm: str) -> dict:
    """SPEC's conclusion "deep nets always need BN": it raises their test accuracy for every optimizer."""
    cells = {_name(d, a, o): _final_test(res, d, a, norm, o, "diff") for d, a in res.pairs()
             if a in DEEP.values() for o in res.present("optimizer", OPTIMIZERS)}
    return _claim(f"deep networks always need {norm} norm", cells,
                  "test-accuracy difference with − without on deep networks, in points", "no deep runs", " pts")


def claim_chance(res: Results, norm: str) -> dict:
    """Without the norm, deep networks trained by SGD, SGDm or Adadelta start near chance: the
    first reported accuracy is below CHANCE percent."""
    cells = {}
    for d, a in res.pairs():
        eps = res.epochs(d, a, _split_of(res, d, a)) if a in DEEP.values() else []
        for o in ("sgd", "sgdm", "adadelta"):
            v = res.acc_by_seed(d, a, "none", o, _split_of(res, d, a), eps[0]) if eps else None
            if v:
                cells[_name(d, a, o)] = one_sample({s: CHANCE - 100 * x for s, x in v.items()}, res.interval)
    return _claim("deep networks without norm stay near chance (~10%) with SGD, SGDm, Adadelta early on", cells,
                  f"{CHANCE:.0f}% minus the accuracy at the first reported epoch, in points",
                  "no deep runs without norm", " pts")


def claim_adam_jumps(res: Results, norm: str) -> dict | None:
    """Adam + norm's accuracy changes more from epoch to epoch than Adam's alone (mean |change| per
    seed over all epochs, paired by seed)."""
    cells = {}
    for d, a in res.pairs():
        sp = _split_of(res, d, a)
        jumps = []
        for n in ("none", norm):
            _, curves, _ = res.curves(d, a, n, "adam", sp)
            per = {s: float(np.mean(np.abs(np.diff([100 * c[x] for x in sorted(c)])))) for s, c in curves.items()
                   if len(c) > 1}
            jumps.append(one_sample(per, res.interval) if per else None)
        cells[_name(d, a)] = contrast(*jumps, res.interval)
    f = _claim(f"Adam + {norm} norm jumps from epoch to epoch more than Adam alone", cells,
               "mean |change| of accuracy between epochs with the norm minus without, in points", "", " pts")
    return None if f["verdict"] == "not testable" else f


def claim_poster(res: Results, norm: str) -> dict | None:
    """The poster: at the first evaluation, batch and layer norm are both ahead of none (paired by
    seed, Holm over the two); how close they are to each other is shown beside it."""
    steps = res.by_step[res.by_step["split"] == "test"]
    if not len(steps) or not {"none", "batch", "layer"} <= set(steps["norm"]):
        return None
    first = steps[steps["step"] == steps["step"].min()]
    acc = {n: dict(zip(g["seed"].astype(int), g["accuracy"])) for n, g in first.groupby("norm")}
    cells = {f"{n} − none": compare(acc["none"], acc[n], "diff", res.interval) for n in ("batch", "layer")}
    f = _claim("BN and LN converge about equally fast, both faster than no normalization (poster)", cells,
               "test accuracy at the first evaluation, with the norm minus none, in points", "", " pts")
    means = {n: 100 * float(np.mean(list(v.values()))) for n, v in acc.items()}
    gap = compare(acc["layer"], acc["batch"], "diff", res.interval)
    f["evidence"] += (f". Test accuracy at the first evaluation: batch {means['batch']:.1f}%, layer "
                      f"{means['layer']:.1f}%, none {means['none']:.1f}%; batch − layer {_signed(gap)} pts")
    return f


CLAIMS = (claim_improves, claim_faster, claim_early, claim_sophisticated, claim_deep, claim_deep_needs, claim_chance,
          claim_adam_jumps, claim_poster)


def findings(df: pd.DataFrame, norm: str = "batch", interval: str = "t") -> list[dict]:
    """SPEC.md's Study 1 conclusions (and the poster's), each checked against the data: a list of
    {claim, verdict, evidence, cells}, verdict one of supported | contradicted | inconclusive |
    point estimate only (one seed) | not testable; cells: the cells that decide it."""
    res = Results(df, interval=interval)
    return [f for claim in CLAIMS if (f := claim(res, norm)) is not None]


def render_findings(items: list[dict], fmt: str = "text") -> str:
    """The checked claims as text, a markdown list, or a LaTeX itemize (every special escaped)."""
    if fmt == "latex":
        items_tex = "".join(f"\\item{{}} {latex_text(MARKS.get(f['verdict'], '-'))} "
                            f"\\textbf{{{latex_text(f['verdict'])}}} --- {latex_text(f['claim'])}: "
                            f"{latex_text(f['evidence'])}\n" for f in items)
        listed = f"\\begin{{itemize}}\n{items_tex}\\end{{itemize}}\n" if items else "None could be checked.\n"
        return f"\\subsection*{{Findings of the thesis, checked against these results}}\n{listed}"
    if fmt == "markdown":
        return "### Findings of the thesis, checked\n\n" + "".join(
            f"- {MARKS.get(f['verdict'], '')} **{f['verdict']}** — {f['claim']}: {f['evidence']}\n" for f in items)
    return "Findings of the thesis, checked against these results\n\n" + "".join(
        f"  {MARKS.get(f['verdict'], '-')} [{f['verdict']}] {f['claim']}\n      {f['evidence']}\n" for f in items)
