"""The sweep folder's own files: `.lock`, held by the live sweep so that a second one on the same
folder is refused (`sweep_lock`; `is_locked` asks without taking it), and `sweep.json`, the
validated sweep that a resumed sweep must match (`prepare_folder`) and that readers load back
(`load_folder_sweep`), and `components.json`, a user's own components and their files' sha256
(`check_components`). It knows the folder's layout (runs/, search/, tuner/) only to check the runs
against a sweep: it must not know Keras Tuner, training or which trial comes next.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import socket
import time
from pathlib import Path

from kbn import registry
from kbn.config import PHASES, SETTING_DEFAULTS, SWEEP_FIELDS_ADDED, Cell, SweepConfig, sweep_from_dict
from kbn.errors import ConfigError, KbnError
from kbn.runlog import write_json_atomic


LOCK_FILE = ".lock"


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
    stored = logdir / "sweep.json"
    current = json.loads(json.dumps(sweep.to_dict()))  # tuples -> lists, as stored
    if stored.exists():
        try:
            old = {**SWEEP_FIELDS_ADDED, **json.loads(stored.read_text())}
        except ValueError:
            raise ConfigError(f"{stored} is unreadable; restore it, or delete it to have the runs on disk "
                              "checked against the sweep file") from None
        changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
        if changed:
            raise ConfigError(f"{logdir} holds a sweep with other settings ({', '.join(changed)} differ); "
                              "use another --logdir, or the sweep file it was started with")
        return
    mismatch = runs_against_sweep(sweep, logdir)
    if mismatch:
        raise ConfigError(f"{logdir} has no sweep.json and its runs were made by another sweep ({mismatch}); "
                          "use another --logdir, or the sweep file they were made with")
    write_json_atomic(stored, current)


def check_components(sweep: SweepConfig, logdir: Path) -> None:
    """Record the sweep's own components (import strings, npz files) with their files' sha256 in
    components.json; a resumed sweep whose module or file changed since is refused in one line."""
    settings = [sweep.train_config(c, sweep.some_lr(c.optimizer), sweep.seeds[0], "final").to_dict()
                for c in sweep.cells()]
    current = registry.sweep_components(settings)
    stored = logdir / "components.json"
    old = json.loads(stored.read_text()) if stored.is_file() else {}
    changed = registry.changed_components(old, current)
    if changed:
        raise ConfigError(f"{logdir}: {changed}")
    if current and current != old:
        write_json_atomic(stored, current)


def runs_against_sweep(sweep: SweepConfig, logdir: Path) -> str | None:
    """The first way the runs and trials in `logdir` disagree with `sweep`, or None."""
    from kbn.plan import cells_by_key  # kbn.plan reads sweep.json through this module

    cells = cells_by_key(sweep)
    ignore = ("lr", "seed", "data_dir")
    for config_path in sorted(logdir.glob("runs/*/config.json")) + sorted(logdir.glob("search/*/*/config.json")):
        phase = "final" if config_path.parent.parent.name == "runs" else config_path.parent.parent.name
        try:
            s = json.loads(config_path.read_text())["settings"]
            key = Cell(s["dataset"], s["arch"], s["norm"], s["optimizer"]).key
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged run is redone anyway
        where = config_path.parent.relative_to(logdir)
        if key not in cells or phase not in PHASES:
            return f"{where} is of cell {key}, not in this sweep"
        want = sweep.train_config(cells[key], s["lr"], s["seed"], phase).to_dict()
        s = {**SETTING_DEFAULTS, **s}  # runs made before a setting existed trained at its default
        diff = [f"{k} {s.get(k)!r} vs {v!r}" for k, v in want.items() if k not in ignore and s.get(k) != v]
        if diff:
            return f"{where}: {', '.join(diff)}"
    for fname in sorted(glob.glob(str(logdir / "tuner" / "trial_*" / "trial.json"))):
        try:
            v = json.loads(Path(fname).read_text())["hyperparameters"]["values"]
            cell = cells.get(v["cell"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # reload sets it aside
        where = Path(fname).parent.relative_to(logdir)
        if cell is None:
            return f"{where} is of cell {v['cell']}, not in this sweep"
        if v["phase"] == "coarse" and float(v["lr"]) not in sweep.coarse_grid(cell.optimizer):
            return f"{where}: coarse lr {v['lr']} is not in this sweep's coarse grid"
        seeds = sweep.seeds if v["phase"] == "final" else sweep.search_seeds
        if int(v["seed"]) not in seeds:
            return f"{where}: seed {v['seed']} is not among this sweep's {v['phase']} seeds {list(seeds)}"
    return None


def load_folder_sweep(logdir: Path | str) -> SweepConfig:
    """The sweep recorded in `logdir`/sweep.json, validated again. It is stored flattened (the search
    settings beside the rest, as SweepConfig.to_dict gives them): this maps it back to the sweep
    file's shape."""
    logdir = Path(logdir)
    try:
        raw = json.loads((logdir / "sweep.json").read_text())
    except OSError:
        raise ConfigError(f"{logdir}: no sweep.json here; is it a sweep's log folder?") from None
    except ValueError:
        raise ConfigError(f"{logdir}/sweep.json is unreadable; run the sweep again with its sweep file to "
                          "rebuild it") from None
    raw["seeds"] = list(raw["seeds"])
    search = {"coarse": list(raw.pop("coarse")), "coarse_by_optimizer": raw.pop("coarse_by_optimizer"),
              "fine_per_side": raw.pop("fine_per_side")}
    for a, b in (("search_epochs", "epochs"), ("search_total_steps", "total_steps"), ("search_seeds", "seeds")):
        if raw.get(a) is not None:
            search[b] = raw[a]
        raw.pop(a, None)
    raw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in raw.items() if v is not None}
    # a fixed-rate sweep searched nothing: its [search] would be refused
    return sweep_from_dict(raw if raw.get("lr") is not None else {**raw, "search": search},
                           where=str(logdir / "sweep.json"))
