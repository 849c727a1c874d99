"""Results in: the long table of accuracies (LONG_COLUMNS: one accuracy, a fraction, per dataset,
arch, norm, optimizer, learning rate, seed, epoch or step, and split; a cell's runs differ in seed,
so the lr only says which rate the seeds were trained at). `scan_runs` builds it from run folders
(with what it left out and the protocol the folder records), `read_long_csv` from a file in the
same format (`kbn export` writes it, through `export_long`), and `Results` indexes it by cell for
the table builders. It reads and checks numbers: it must not know statistics, tables or output
formats."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from kbn.core import registry
from kbn.core.errors import ConfigError, KbnError
from kbn.core.stability import Outcome, classify
from kbn.runs.runlog import check_run, read_metrics
from kbn.sweep.folder import stored_sweep


LONG_COLUMNS = ["dataset", "arch", "norm", "optimizer", "lr", "seed", "epoch", "split", "accuracy"]
# step replaces epoch for step-based runs; wall_time: the run's cumulative seconds at that evaluation,
# train_time: of them, its training seconds (compilation and evaluations excluded; runs from before kbn
# recorded it have none); both absent from published numbers; diverged_at: where a run's loss turned
# NaN/inf (its rows after that point are at chance), NaN for every other run and for published numbers
OPTIONAL = ["step", "wall_time", "train_time", "diverged_at"]
SECONDS = ("train_time", "wall_time")  # what a report's seconds are made of: the first a run has
CELL = ["dataset", "arch", "norm", "optimizer"]
SPLITS = ("train", "validation", "test")
THESIS_EPOCHS = (2, 5, 20, 35, 50)


class ReportError(KbnError):
    """Input the reporter cannot read: the message names the file and what is wrong."""


RUN_COLUMNS = ["dataset", "arch", "norm", "optimizer", "seed", "lr", "epoch", "step", "loss", "accuracy",
               "val_loss", "val_accuracy", "test_loss", "test_accuracy", "wall_time", "train_time", "status",
               "batch_size", "diverged_at"]


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
    # what the run folders recorded about a user's components: `with registry.learnt(scan.facts):`
    facts: dict = dataclasses.field(default_factory=dict)

    def notices(self) -> list[str]:
        """One line per thing left out: a skipped run and why, a sweep's failed trial, the
        number of unfinished runs."""
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
    records, skipped, unfinished, owner, settings, facts = [], [], 0, {}, [], {}
    rates_apart = _rate_list(logdir)
    for folder in folders:
        check = check_run(folder)
        if check.damaged:
            skipped.append((folder, check.problem))
        elif check.result is None:
            unfinished += 1
        else:
            try:
                s = check.config["settings"]
                for kind, known in (check.config.get("components") or {}).items():
                    registry.learn(kind, s[kind], known, facts)  # a user's display name and family, as trained
                classes = (check.config.get("data") or {}).get("num_classes")
                registry.learn("dataset", s["dataset"], {"classes": classes}, facts)
                key, lr = tuple(s[k] for k in CELL + ["seed"]), s["lr"]
                if rates_apart:  # each shared rate is its own set of seeds: the report splits them
                    key += (float(lr),)
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
                   _sweep_problems(logdir), read_protocol(logdir, settings, searched), facts)


def _rate_list(logdir: Path) -> bool:
    """Whether the folder's sweep.json trains at a list of shared rates (a seed runs once per rate)."""
    try:
        return isinstance(stored_sweep(logdir).get("lr"), list)
    except ConfigError:
        return False


def read_protocol(logdir: Path, final: list[dict], search_folders: list[Path]) -> dict:
    """How the numbers were made, as far as the folder says: the final runs' lengths and seeds (from
    their settings), the search's length, seeds and selection split (sweep.json, else the search
    trials' own config.json), and what batch norm evaluated with. Keys whose answer is not recorded
    are absent."""
    out = {"final": _lengths(final), "final_seeds": sorted({s["seed"] for s in final})}
    out["precision"] = sorted({s.get("precision", "float32") for s in final})  # before the setting: float32
    if _bn_statistics(final):
        out["bn_statistics"] = _bn_statistics(final)
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
        sweep = stored_sweep(logdir)
    except ConfigError:
        sweep = {}
    search = sweep.get("search") if isinstance(sweep.get("search"), dict) else {}
    if sweep.get("lr") is not None:  # the fixed-rate protocol searched nothing (a list: several shared rates)
        lr = sweep["lr"]
        out["fixed_lr"] = [float(r) for r in lr] if isinstance(lr, list) else float(lr)
        out.pop("search", None)
        return out
    if search.get("epochs") or search.get("total_steps"):
        out["search"] = ([f"{search['total_steps']} steps"] if search.get("total_steps")
                         else [f"{search['epochs']} epochs"])
    elif "search" not in out and sweep.get("epochs"):  # a sweep without search epochs searches at full length
        full = sweep.get("total_steps")
        out["search"] = [f"{full} steps" if full else f"{sweep['epochs']} epochs"]
    for key, value in (("select_on", sweep.get("select_on")), ("search_seeds", search.get("seeds")),
                       ("selection", search.get("selection"))):
        if value is not None:
            out[key] = value
    return out


def _bn_statistics(settings: list[dict]) -> list[str]:
    """What the final runs' batch norms evaluated with (config.BN_STATISTICS), in words; runs whose norm
    has no BatchNormalization (none, layer, group, rms) are left out. A run made before the setting
    existed evaluated with Keras's moving averages."""
    out = set()
    for s in settings:
        rec = registry.NORMS.get(s.get("norm"))  # None: a norm of one's own, perhaps a BatchNormalization
        if rec is not None and rec.layer != "BatchNormalization":
            continue
        if s.get("bn_statistics", "moving") == "population":
            out.add(f"population over {s.get('bn_batches')} training batches of {s.get('batch_size')} "
                    "(Ioffe & Szegedy Alg. 2)")
        else:
            momentum = f"momentum {rec.momentum:g}" if rec else "momentum as the layer sets it"
            out.add(f"Keras moving averages ({momentum})")
    return sorted(out)


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
    """One line: the search's length, selection split and seeds vs the final runs' length and seeds,
    the arithmetic they trained in, and what batch norm evaluated with."""
    if not protocol:
        return "Protocol: not recorded with these numbers (read from a file of accuracies)."

    def length(items):
        unit = items[0].split()[1]
        return f"{' or '.join(i.split()[0] for i in items)} {unit}" if len({i.split()[1] for i in items}) == 1 \
            else " or ".join(items)

    search = protocol.get("search")
    if isinstance(protocol.get("fixed_lr"), list):
        parts = [f"fixed learning rates {', '.join(f'{r:g}' for r in protocol['fixed_lr'])} shared by every arm, "
                 "each its own final runs (no search)"]
    elif protocol.get("fixed_lr") is not None:
        parts = [f"fixed learning rate {protocol['fixed_lr']:g} for every arm (no search)"]
    else:
        parts = [f"learning rate searched with {length(search).replace(' epochs', '-epoch').replace(' steps', '-step')}"
                 " trials" if search else "the learning-rate search is not recorded here"]
    if protocol.get("select_on"):
        rule = {"stable": " as the best mean score among the rates that neither they nor their next larger rate "
                          "diverged or collapsed in the search",
                "best": " as the best mean score"}.get(protocol.get("selection"), "")
        parts.append(f"selected on {protocol['select_on']} accuracy{rule}")
    if protocol.get("search_seeds"):
        seeds = protocol["search_seeds"]
        parts.append(f"search seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")  # which, not how many
    final = []
    if protocol.get("final"):
        final.append(length(protocol["final"]))
    if protocol.get("final_seeds"):
        final.append(f"seeds {', '.join(map(str, protocol['final_seeds']))}")
    arithmetic = f"; precision: {' or '.join(map(_precision, protocol['precision']))}" \
        if protocol.get("precision") else ""
    bn = f"; BN statistics: {' or '.join(protocol['bn_statistics'])}" if protocol.get("bn_statistics") else ""
    return f"Protocol: {', '.join(parts)}; final runs: {', '.join(final) or 'not recorded'}{arithmetic}{bn}."


def _precision(policy: str) -> str:
    """A run's precision (config.PRECISIONS) in the protocol line's words."""
    if policy == "mixed_bfloat16":
        return "mixed_bfloat16 (bfloat16 compute; float32 weights, optimizer state, BN statistics, softmax and loss)"
    return policy


def _sweep_problems(logdir: Path) -> list[str]:
    """A sweep folder's failed and unreadable trials and lost runs (a completed trial's run folder,
    result.json or model.keras gone): cells they hold have fewer final runs, and a report must say why
    rather than show a bare gap or fewer seeds (damaged runs are already among the skipped)."""
    if not (logdir / "sweep.json").is_file():
        return []
    from kbn.sweep.status import folder_progress, problem_lines

    try:
        state = folder_progress(logdir)
    except (KbnError, KeyError, TypeError, ValueError) as e:  # a hand-edited sweep.json must not stop a report
        return [f"the sweep's own files cannot be read ({e})"]
    return [f"sweep: {line}" for line in problem_lines(state, kinds=("failed", "unreadable", "lost"))]


def run_table(logdir: str | Path) -> pd.DataFrame:
    """The run table of `scan_runs` alone (what it left out is in `scan_runs(logdir).notices()`)."""
    return scan_runs(logdir).runs


def _run_records(config: dict, status: str, rows: list[dict]) -> list[dict]:
    s = config["settings"]
    by_step = s.get("eval_every_steps") is not None
    base = {k: s[k] for k in ("dataset", "arch", "norm", "optimizer", "seed", "lr")} | {"status": status,
                                                                                   "batch_size": s.get("batch_size")}
    records = [{**base, **{k: r.get(k) for k in RUN_COLUMNS if k in r},
                "epoch": None if by_step else int(r["epoch"]), "step": int(r["step"])} for r in rows]
    if status == "diverged" and rows:
        base["diverged_at"] = float(rows[-1]["step"] if by_step else rows[-1]["epoch"])
        for r in records:
            r["diverged_at"] = base["diverged_at"]
        level = 1 / (config.get("data") or {}).get("num_classes", 10)  # chance: 1 / classes
        chance = {"val_accuracy": level, "test_accuracy": level}
        records[-1].update({k: v for k, v in chance.items() if records[-1].get(k) is None})  # the diverged row
        if by_step and config["schedule"].get("eval_at"):  # the run's own evaluation steps
            last = int(rows[-1]["step"])
            records += [{**base, **chance, "epoch": None, "step": step}
                        for step in config["schedule"]["eval_at"] if step > last]
        elif by_step:
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
    runs = runs.assign(**{c: np.nan for c in (*SECONDS, "diverged_at") if c not in runs})  # a table made without them
    parts = []
    for split, col in (("train", "accuracy"), ("validation", "val_accuracy"), ("test", "test_accuracy")):
        part = runs[runs[col].notna()][["dataset", "arch", "norm", "optimizer", "lr", "seed", "epoch", "step",
                                        *SECONDS, "diverged_at", col]]
        parts.append(part.rename(columns={col: "accuracy"}).assign(split=split))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LONG_COLUMNS + OPTIONAL)
    # an epoch-based run's step is not its x axis
    df.loc[df["epoch"].notna(), "step"] = np.nan
    return normalise_long(df[LONG_COLUMNS + OPTIONAL])


def collect_runs(logdir: str | Path) -> pd.DataFrame:
    """Long-format accuracies of every finished run under `logdir` (see `scan_runs` for what is left out)."""
    return long_from_runs(run_table(logdir))


def normalise_long(df: pd.DataFrame) -> pd.DataFrame:
    """A long table as every reader returns it: the optional columns (epoch, step, lr, wall_time,
    train_time) present as floats (NaN where absent), seed an int, accuracy a float, a fresh index."""
    if "step" not in df:
        df["step"] = np.nan
    if "epoch" not in df:
        df["epoch"] = np.nan
    if "lr" not in df:  # published numbers often do not say
        df["lr"] = np.nan
    for col in (*SECONDS, "diverged_at"):
        if col not in df:
            df[col] = np.nan
    for col in ("epoch", "step", "lr", *SECONDS, "diverged_at"):
        df[col] = df[col].astype(float)
    df["seed"] = df["seed"].astype(int)
    df["accuracy"] = df["accuracy"].astype(float)
    return df.reset_index(drop=True)


_OPT_BY_NAME = {**{k: k for k in registry.OPTIMIZERS},
                **{r.display.lower(): k for k, r in registry.OPTIMIZERS.items()}}


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
    twice = sorted({c for c in header if header.count(c) > 1}, key=header.index)
    if twice:  # which of the two a row's value would come from is a guess
        at = " and ".join(str(i + 1) for i, c in enumerate(header) if c == twice[0])
        raise ReportError(f"{path}: the header names {twice[0]} twice (columns {at}); name each column once")
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
        records.append((n, rec))
    _same_epochs(path, records)
    records = [rec for _, rec in records]
    return normalise_long(pd.DataFrame.from_records(records, columns=LONG_COLUMNS + OPTIONAL))


def _same_epochs(path: Path, records: list[tuple[int, dict]]) -> None:
    """Every seed of an arm (a cell and norm, on one split) must have the same evaluations: a file holds
    finished runs, and a seed with an extra epoch would move the arm's "last epoch" to where the other
    seeds have no number. The error names the first line that not every seed has."""
    arms: dict = {}
    for n, rec in records:
        axis = "epoch" if rec["epoch"] is not None else "step"
        arm = arms.setdefault(tuple(rec[c] for c in CELL) + (rec["split"], axis), {})
        arm.setdefault(rec["seed"], {})[rec[axis]] = n
    for (*cell, split, axis), seeds in arms.items():
        have = {s: sorted(xs) for s, xs in seeds.items()}
        if len({tuple(xs) for xs in have.values()}) < 2:
            continue
        common = set.intersection(*(set(xs) for xs in have.values()))
        n, seed, x = min((n, s, x) for s, xs in seeds.items() for x, n in xs.items() if x not in common)
        other = next(s for s in sorted(have) if have[s] != have[seed])
        shown = [_epochs(have[s]).replace("epoch", axis) for s in (seed, other)]
        raise ReportError(f"{path} line {n}: {' '.join(cell)} {split}: seed {seed} has {shown[0]} but seed {other} "
                          f"has {shown[1]}; every seed of an arm needs the same {axis}s (a file of finished runs): "
                          "add the missing rows or remove the extra ones")


def _uncommented(line: str) -> str:
    """`line` up to a '#' that starts a comment: one outside double quotes (a quoted name may hold '#')."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _csv_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number in the file, fields) of every line that is not blank or a # comment (a '#' outside
    quotes starts one)."""
    try:
        text = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: Excel writes a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    out = []
    for n, line in enumerate(text, 1):
        line = _uncommented(line)
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
    for col in ("dataset", "arch", "norm"):
        try:
            rec[col] = registry.check(col, row[col])
        except ConfigError as e:
            bad(col, str(e).split("; ", 1)[1])
    if row["split"] not in SPLITS:
        bad("split", f"choose from: {', '.join(SPLITS)}")
    rec["split"] = row["split"]
    rec["optimizer"] = _OPT_BY_NAME.get(row["optimizer"].lower())
    if rec["optimizer"] is None and registry.is_import_string(row["optimizer"]):
        rec["optimizer"] = row["optimizer"]
    if rec["optimizer"] is None:
        bad("optimizer", f"choose from: {', '.join(registry.OPTIMIZERS)}, or an import string package.module:attr")
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
    for col in SECONDS:
        rec[col] = _number(row.get(col))
        if row.get(col) and not 0 <= rec[col] < np.inf:
            bad(col, "give the run's seconds so far (a number from 0), or leave it empty")
    rec["diverged_at"] = _number(row.get("diverged_at"))
    if row.get("diverged_at") and not 0 < rec["diverged_at"] < np.inf:
        bad("diverged_at", "give the epoch or step where the run's loss turned NaN/inf, or leave it empty")
    return rec


def export_long(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The long format, split by x axis: {'epoch': ..., 'step': ...} (only those present)."""
    out = {}
    for axis in ("epoch", "step"):
        part = df[df[axis].notna()]
        if len(part):
            key = LONG_COLUMNS[:6]  # the cell, its lr and the seed
            extra = [c for c in (*SECONDS[::-1], "diverged_at") if part[c].notna().any()]
            part = part[key + [axis, "split", "accuracy"] + extra].copy()
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


def _in_order(pairs: set) -> list[tuple[str, str]]:
    """(dataset, arch) pairs in the thesis's order, arch-major, dataset-minor; a user's names after
    kbn's own (none is left out)."""
    archs, datasets = registry.order("arch", {a for _, a in pairs}), registry.order("dataset", {d for d, _ in pairs})
    return [(d, a) for a in archs for d in datasets if (d, a) in pairs]


class Results:
    """Seed-level accuracies indexed for the table builders."""

    def __init__(self, df: pd.DataFrame, epochs: list[int] | None = None, interval: str = "t"):
        df = df.assign(**{c: np.nan for c in (*SECONDS, "diverged_at") if c not in df})
        self._outcomes: dict = {}
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
        """The accuracies (fractions, in seed order) of a cell at one epoch; None if it has none."""
        v = self._acc.get((dataset, arch, norm, optimizer, split, epoch))
        return list(v.values()) if v else None

    def acc_by_seed(self, dataset, arch, norm, optimizer, split, epoch) -> dict | None:
        """{seed: accuracy} of a cell at one epoch; None if it has none."""
        return self._acc.get((dataset, arch, norm, optimizer, split, epoch))

    def present(self, col: str) -> list[str]:
        """The values of `col` (a registry kind) that epoch-based results have, in the registry's order."""
        return registry.order(col, self.df[self.df["epoch"].notna()][col])

    def pairs(self) -> list[tuple[str, str]]:
        """(dataset, arch) pairs in the thesis's order: arch-major, dataset-minor."""
        ep = self.df[self.df["epoch"].notna()]
        return _in_order(set(zip(ep["dataset"], ep["arch"])))

    def epochs(self, dataset, arch, split) -> list[int]:
        """The epochs to report for a network on `split`: the requested ones it has, else all of
        them when there are 10 or fewer, else the thesis's epochs it has and its last."""
        ep = self.df[(self.df["dataset"] == dataset) & (self.df["arch"] == arch) & (self.df["split"] == split)]
        have = sorted(int(e) for e in ep["epoch"].dropna().unique())
        if self.requested_epochs:
            return [e for e in self.requested_epochs if e in have]
        if len(have) <= 10:
            return have
        return sorted(set(e for e in THESIS_EPOCHS if e in have) | {have[-1]})

    def final_epoch(self, dataset, arch, norm, optimizer, split) -> int | None:
        """A cell's last epoch on `split`; None without epoch-based results."""
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
        return _in_order({(d, a) for d, a, _ in self._splits})

    def present_all(self, col: str) -> list[str]:
        """The values of `col` that any result (epoch- or step-based) has, in the registry's order."""
        return registry.order(col, self.df[col])

    def has(self, dataset, arch, split) -> bool:
        """Whether a (dataset, arch) pair has results on `split`."""
        return (dataset, arch, split) in self._splits

    def outcomes(self, dataset, arch, norm, optimizer) -> dict[int, Outcome]:
        """{seed: how its run ended} (kbn.core.stability), read off its validation curve (test where no
        validation is recorded, as published tables often are); {} without runs. A diverged run's
        rows after its divergence are at chance: it is classified on the rows before."""
        key = (dataset, arch, norm, optimizer)
        if key not in self._outcomes:
            split = next((s for s in ("validation", "test", "train") if self.has(dataset, arch, s)), "validation")
            axis, curves, _ = self.curves(dataset, arch, norm, optimizer, split)
            chance = 1 / (registry.classes(dataset) or 10)
            g = self.df[(self.df["dataset"] == dataset) & (self.df["arch"] == arch) & (self.df["norm"] == norm)
                        & (self.df["optimizer"] == optimizer)]
            at = {int(sd): float(v) for sd, v in g.groupby("seed")["diverged_at"].max().items() if not np.isnan(v)}
            out = {}
            for seed, c in curves.items():
                xs = sorted(x for x in c if seed not in at or x <= at[seed])
                out[seed] = classify(xs, [c[x] if seed not in at or x < at[seed] else None for x in xs], chance,
                                     diverged=seed in at, split=split)
            self._outcomes[key] = out
        return self._outcomes[key]

    def axis(self, dataset, arch) -> str:
        """What a network's evaluations count: 'epoch', or 'step' for runs evaluated every K steps."""
        g = self.df[(self.df["dataset"] == dataset) & (self.df["arch"] == arch)]
        return "epoch" if g["epoch"].notna().any() else "step"

    def seconds(self, dataset, arch, norm, optimizer, split) -> dict[int, dict[int, float]]:
        """seed -> {epoch or step -> the run's cumulative seconds there}: training seconds where the
        run recorded them, else its wall time, as `curves` (empty without timings)."""
        df = self.df
        g = df[(df["dataset"] == dataset) & (df["arch"] == arch) & (df["norm"] == norm)
               & (df["optimizer"] == optimizer) & (df["split"] == split)]
        axis = "epoch" if g["epoch"].notna().any() else "step"
        out = {}
        for seed, s in g[g[axis].notna()].groupby("seed"):
            col = _seconds_column(s)
            if col:
                timed = s[s[col].notna()]
                out[int(seed)] = dict(zip(timed[axis].astype(int), timed[col].astype(float)))
        return out

    def curves(self, dataset, arch, norm, optimizer, split) -> tuple[str, dict[int, dict[int, float]], dict]:
        """(x axis, seed -> {epoch or step -> accuracy}, seed -> seconds per epoch or step) of one
        cell, every evaluation (not only the reported epochs). The seconds are training seconds where
        the run recorded them, else its wall time (`seconds_note` says which)."""
        df = self.df
        g = df[(df["dataset"] == dataset) & (df["arch"] == arch) & (df["norm"] == norm)
               & (df["optimizer"] == optimizer) & (df["split"] == split)]
        axis = "epoch" if g["epoch"].notna().any() else "step"
        g = g[g[axis].notna()]
        curves, pace = {}, {}
        for seed, s in g.groupby("seed"):
            s = s.sort_values(axis)
            curves[int(seed)] = dict(zip(s[axis].astype(int), s["accuracy"].astype(float)))
            col = _seconds_column(s)
            timed = s[s[col].notna()] if col else s.iloc[:0]
            if len(timed):  # a diverged run's rows at chance after its last step have no time
                pace[int(seed)] = float(timed[col].iloc[-1] / timed[axis].iloc[-1])
        return axis, curves, pace

    def seconds_note(self, dataset, arch) -> str:
        """What a table's seconds for (dataset, arch) are, for its footer."""
        g = self.df[(self.df["dataset"] == dataset) & (self.df["arch"] == arch)]
        kinds = {_seconds_column(r) for _, r in g.groupby(CELL[2:] + ["seed"])} - {None}
        if kinds == {"train_time"}:
            return "seconds are training time (compilation, evaluations and logging excluded)"
        if kinds == {"wall_time"}:
            return ("seconds are wall time, compilation and evaluations included (these runs predate kbn's "
                    "training time)")
        if kinds:
            return ("seconds are training time where the runs recorded it, else wall time (compilation and "
                    "evaluations included)")
        return "no run recorded its seconds"


def _seconds_column(run: pd.DataFrame) -> str | None:
    """The column a run's seconds come from: the first of SECONDS it has, None if neither."""
    return next((c for c in SECONDS if run[c].notna().any()), None)
