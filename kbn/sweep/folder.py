"""The sweep folder's own files: `.lock`, held by the live sweep so that a second one on the same
folder is refused (`sweep_lock`; `is_locked` asks without taking it), and `sweep.json`, the
validated sweep in its file's own shape (the [search] table nested), which a resumed sweep must
match (`prepare_folder`) and readers load back (`stored_sweep`, `load_folder_sweep`; a folder from
before kbn kept that shape holds it flattened, and is read as well), and `components.json`, a
user's own components and their files' sha256 (`check_components`). It knows the folder's layout (runs/, search/, tuner/) only to check the runs
against a sweep: it must not know Keras Tuner, training or which trial comes next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from kbn.core import registry
from kbn.core.config import (Cell, PHASES, SEARCH_FIELDS, SETTING_DEFAULTS, SweepConfig, cells_by_key, file_shape,
                             off_plan, sweep_from_dict)
from kbn.core.errors import ConfigError, KbnError
from kbn.runs.runlog import RunCheck, check_run, write_json_atomic
from kbn.sweep.trials import records


LOCK_FILE = ".lock"
SWEEP_FILE = "sweep.json"


class SweepBusy(KbnError):
    """Another live sweep holds the folder."""


def _take(f) -> bool:
    """Take the folder's lock on the open lock file `f` without waiting; False when another process
    holds it. The kernel lets go of it when its holder dies, even by kill -9."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def sweep_lock(logdir: Path):
    """An exclusive lock on the sweep folder; the kernel drops it when the holder dies."""
    logdir.mkdir(parents=True, exist_ok=True)
    f = open(logdir / LOCK_FILE, "a+")
    if not _take(f):
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise SweepBusy(f"{logdir} is in use by a live kbn sweep ({who}); wait for it to finish, "
                        "or give this one another --logdir")
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    try:
        yield
    finally:
        f.close()


def is_locked(logdir: Path) -> bool:
    """Whether a live sweep holds `logdir` (its lock is taken and let go at once when free)."""
    try:
        with open(logdir / LOCK_FILE, "a+") as f:
            return not _take(f)
    except OSError:
        return False


def prepare_folder(sweep: SweepConfig, logdir: Path) -> None:
    """Record the sweep in its folder; resuming with a different sweep file is refused. Without
    sweep.json (deleted, or a folder of older runs) the runs on disk are checked against the sweep."""
    stored = logdir / SWEEP_FILE
    if stored.exists():
        old = load_folder_sweep(logdir)
        changed = [f.name for f in dataclasses.fields(SweepConfig) if getattr(old, f.name) != getattr(sweep, f.name)]
        if changed == ["selection"]:
            raise ConfigError(f"{logdir} holds a sweep whose rates were chosen with search.selection = "
                              f"{old.selection!r}, and this file asks for {sweep.selection!r}; add selection = "
                              f"{old.selection!r} to its [search] table to resume it, or use another --logdir")
        if changed:
            raise ConfigError(f"{logdir} holds a sweep with other settings ({', '.join(sorted(changed))} differ); "
                              "use another --logdir, or the sweep file it was started with")
        return
    mismatch = runs_against_sweep(sweep, logdir)
    if mismatch:
        raise ConfigError(f"{logdir} has no sweep.json and its runs were made by another sweep ({mismatch}); "
                          "use another --logdir, or the sweep file they were made with")
    write_json_atomic(stored, sweep.to_file_dict())


def check_components(sweep: SweepConfig, logdir: Path) -> None:
    """Record the sweep's own components (import strings, npz files) with their files' sha256 in
    components.json; a resumed sweep whose module or file changed since is refused in one line."""
    settings = [sweep.train_config(c, sweep.some_lr(c.optimizer), sweep.seeds[0], "final").to_dict()
                for c in sweep.cells()]
    current = registry.sweep_components(settings)
    stored = logdir / "components.json"
    old = read_components(stored)
    changed = registry.changed_components(old, current)
    if changed:
        raise ConfigError(f"{logdir}: {changed}")
    if current and current != old:
        write_json_atomic(stored, current)


def read_components(stored: Path) -> dict:
    """components.json (a sweep's import strings and npz files with their sha256), {} when absent;
    ConfigError naming it when it is not what kbn wrote."""
    if not stored.is_file():
        return {}
    try:
        old = json.loads(stored.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        old = e
    if not isinstance(old, dict) or not all(isinstance(v, dict) for v in old.values()):
        raise ConfigError(f"{stored}: unreadable (not the table of components kbn writes); restore it, or delete it "
                          "to record the sweep's components afresh (a module changed since can then go unnoticed)")
    return old


def runs_against_sweep(sweep: SweepConfig, logdir: Path) -> str | None:
    """The first way the runs and trials in `logdir` disagree with `sweep`, or None."""
    cells = cells_by_key(sweep)
    ignore = ("lr", "seed", "data_dir")
    for config_path in sorted(logdir.glob("runs/*/config.json")) + sorted(logdir.glob("search/*/*/config.json")):
        phase = "final" if config_path.parent.parent.name == "runs" else config_path.parent.parent.name
        try:
            config = json.loads(config_path.read_text())
            s, protocol = config["settings"], config.get("protocol") or {}
            key = Cell(s["dataset"], s["arch"], s["norm"], s["optimizer"]).key
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a damaged run is redone anyway
        where = config_path.parent.relative_to(logdir)
        if key not in cells or phase not in PHASES:
            return f"{where} is of cell {key}, not in this sweep"
        want = sweep.train_config(cells[key], s["lr"], s["seed"], phase).to_dict()
        s = {**SETTING_DEFAULTS, **s}  # runs made before a setting existed trained at its default
        diff = [f"{k} {s.get(k)!r} vs {v!r}" for k, v in want.items() if k not in ignore and s.get(k) != v]
        # how its rate was chosen (select_on, selection, the grids, ...), as config.json's protocol says
        rule = sweep.protocol()
        diff += [f"{k} {protocol[k]!r} vs {v!r}" for k, v in rule.items() if k in protocol and protocol[k] != v]
        if diff:
            return f"{where}: {', '.join(diff)}"
    for t in records(logdir):  # the oracle's reload sets unreadable ones aside
        where = t.path.parent.relative_to(logdir)
        cell = cells.get(t.cell)
        if cell is None:
            return f"{where} is of cell {t.cell}, not in this sweep"
        off = off_plan(sweep, cell, t.values)
        if off:
            return f"{where}: {off}"
    return None


# What to do about a damaged sweep.json: status, the report and a resume all say this one thing.
SWEEP_JSON_FIX = ("restore it, or delete it: `kbn sweep FILE --logdir` then checks the runs on disk against FILE "
                  "and writes sweep.json anew")


def stored_sweep(logdir: Path | str, fix: str = SWEEP_JSON_FIX) -> dict:
    """`logdir`/sweep.json as written, in the sweep file's shape, not validated (a report reads what it
    can of a hand-edited one). One written flattened (SweepConfig's fields by name, before sweep.json
    kept the file's shape) is put in that shape. `fix`: what an unreadable one's error tells to do."""
    logdir = Path(logdir)
    try:
        raw = json.loads((logdir / SWEEP_FILE).read_text())
    except OSError:
        raise ConfigError(f"{logdir}: no sweep.json here; is it a sweep's log folder?") from None
    except ValueError:
        raise ConfigError(f"{logdir}/sweep.json is unreadable; {fix}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{logdir}/sweep.json holds {type(raw).__name__}, not a sweep; {fix}")
    raw = file_shape(raw) if not raw.keys().isdisjoint(SEARCH_FIELDS) else raw
    if isinstance(raw.get("search"), dict) and "selection" not in raw["search"]:
        # made before kbn had the stable rule: its rates were chosen as the best scores
        raw["search"] = {**raw["search"], "selection": "best"}
    return raw


def load_folder_sweep(logdir: Path | str) -> SweepConfig:
    """The sweep recorded in `logdir`/sweep.json, validated again."""
    try:
        return sweep_from_dict(stored_sweep(logdir), where=str(Path(logdir) / SWEEP_FILE))
    except ConfigError as e:
        fix = SWEEP_JSON_FIX
        raise ConfigError(str(e) if str(e).endswith(fix) or "no sweep.json here" in str(e) else f"{e}; {fix}") from None



def run_folder(sweep: SweepConfig, logdir: Path, values: dict, cells: dict[str, Cell] | None = None) -> Path:
    """Where the trial with these hyperparameters keeps its run: runs/ for final runs (what reports
    read), search/<phase>/ for search trials."""
    cell = (cells or cells_by_key(sweep))[values["cell"]]
    cfg = sweep.train_config(cell, values["lr"], values["seed"], values["phase"])
    sub = "runs" if values["phase"] == "final" else f"search/{values['phase']}"
    return Path(logdir) / sub / cfg.run_name()


def keeps_model(values: dict) -> bool:
    """Whether the trial with these hyperparameters keeps its trained network (model.keras): final
    runs do; search trials would cost disk for nothing."""
    return values["phase"] == "final"


def check_trial_run(sweep: SweepConfig, logdir: Path, values: dict,
                    cells: dict[str, Cell] | None = None) -> tuple[Path, RunCheck]:
    """A completed trial's run folder and what it holds: the trial counts as done only while the
    folder is there and whole (a final run with a whole model.keras); Keras Tuner's COMPLETED alone
    is not believed over the disk."""
    folder = run_folder(sweep, logdir, values, cells)
    return folder, check_run(folder, finished=True, model=keeps_model(values))
