"""What a sweep has left to do, derived from the results of its ended trials alone.

Pure functions over scores keyed (cell, phase, lr, seed), shared by the oracle that hands out trials
(kbn.tune) and by `kbn status`, which reads the trial files without Keras Tuner.
"""

from __future__ import annotations

import collections
import fcntl
import glob
import json
import math
from pathlib import Path

from kbn.config import Cell, SweepConfig, sweep_from_dict
from kbn.errors import ConfigError

ENDED = ("COMPLETED", "FAILED")  # Keras Tuner's TrialStatus values for trials that will not run again


def _item(cell: Cell, phase: str, lr: float, seed: int) -> dict:
    return {"cell": cell.key, "phase": phase, "lr": float(lr), "seed": int(seed)}


def trial_key(values: dict) -> tuple:
    return values["cell"], values["phase"], float(values["lr"]), int(values["seed"])


def _best(candidates: list[tuple[float, float]]) -> float:
    """The learning rate with the highest score; ties go to the earlier one (grid order)."""
    return max(candidates, key=lambda c: c[1])[0]


def cell_progress(sweep: SweepConfig, cell: Cell, scores: dict[tuple, float]) -> dict:
    """Where a cell stands, from the scores of its ended trials (`trial_key` -> score; -inf if failed).

    Returns todo (items runnable now, in order), counts per phase, the coarse winner and chosen lr."""
    s0 = sweep.seeds[0]
    out = {"todo": [], "coarse": [0, 0], "fine": [0, 0], "final": [0, len(sweep.seeds)],
           "coarse_best": None, "chosen": None, "final_scores": []}

    def phase(name, lrs):
        keys = [(cell.key, name, float(lr), s0) for lr in lrs]
        done = [k for k in keys if k in scores]
        out[name] = [len(done), len(keys)]
        out["todo"] += [_item(cell, name, lr, s0) for lr, k in zip(lrs, keys) if k not in scores]
        return None if len(done) < len(keys) else [(k[2], scores[k]) for k in keys]

    coarse = phase("coarse", sweep.coarse_grid(cell.optimizer))
    if coarse is None:
        return out
    out["coarse_best"] = _best(coarse)
    fine_grid = sweep.fine_grid(cell.optimizer, out["coarse_best"])
    out["fine"] = [0, len(fine_grid)]
    fine = phase("fine", fine_grid)
    if fine is None:
        return out
    out["chosen"] = chosen = _best(coarse + fine)
    for seed in sweep.seeds:
        k = (cell.key, "final", float(chosen), seed)
        if k in scores:
            out["final"][0] += 1
            out["final_scores"].append(scores[k])
        else:
            out["todo"].append(_item(cell, "final", chosen, seed))
    return out


def planned_trials(sweep: SweepConfig) -> int:
    n_fine = 0 if sweep.fine_per_side == 0 else 2 * sweep.fine_per_side
    return sum(len(sweep.coarse_grid(c.optimizer)) + (n_fine if len(sweep.coarse_grid(c.optimizer)) > 1 else 0)
               + len(sweep.seeds) for c in sweep.cells())


def score_value(score) -> float:
    """A trial's score for ranking: a failed trial (no score, or NaN) ranks below every other."""
    return -math.inf if score is None or math.isnan(score) else float(score)


def load_folder_sweep(logdir: Path | str) -> SweepConfig:
    logdir = Path(logdir)
    try:
        raw = json.loads((logdir / "sweep.json").read_text())
    except OSError:
        raise ConfigError(f"{logdir}: no sweep.json here; is it a sweep's log folder?") from None
    raw["seeds"] = list(raw["seeds"])
    search = {"coarse": list(raw.pop("coarse")), "coarse_by_optimizer": raw.pop("coarse_by_optimizer"),
              "fine_per_side": raw.pop("fine_per_side")}
    for a, b in (("search_epochs", "epochs"), ("search_total_steps", "total_steps")):
        if raw.get(a) is not None:
            search[b] = raw[a]
        raw.pop(a, None)
    raw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in raw.items() if v is not None}
    return sweep_from_dict({**raw, "search": search}, where=str(logdir / "sweep.json"))


def folder_progress(logdir: Path) -> tuple[SweepConfig, dict[str, dict], dict[str, int]]:
    """Per-cell progress read straight from the trial files (no Keras Tuner needed), and the
    number of trials not yet ended per cell."""
    sweep = load_folder_sweep(logdir)
    scores, running = {}, collections.Counter()
    for fname in glob.glob(str(Path(logdir) / "tuner" / "trial_*" / "trial.json")):
        try:
            state = json.loads(Path(fname).read_text())
        except (OSError, ValueError):
            continue
        values = state["hyperparameters"]["values"]
        if state["status"] in ENDED:
            scores[trial_key(values)] = score_value(state.get("score"))
        else:
            running[values["cell"]] += 1
    return sweep, {c.key: cell_progress(sweep, c, scores) for c in sweep.cells()}, running


def status_rows(logdir: Path, live: bool | None = None) -> list[list]:
    sweep, prog, running = folder_progress(logdir)
    if live is None:
        live = _locked(Path(logdir))
    rows = []
    for key, p in prog.items():
        started = running[key] or p["coarse"][0]  # fine and final trials come after the coarse ones
        if p["final"][0] == p["final"][1]:
            state = "done"
        elif started:
            state = "running" if live else "stopped"
        else:
            state = "pending"
        final = "-" if not p["final_scores"] else f"{sum(p['final_scores']) / len(p['final_scores']):.4f}"
        rows.append([key, state, "{}/{}".format(*p["coarse"]), "{}/{}".format(*p["fine"]) if p["coarse_best"] else "-",
                     "{}/{}".format(*p["final"]), "-" if p["chosen"] is None else f"{p['chosen']:.4g}", final])
    return rows


STATUS_HEADERS = ["cell", "state", "coarse", "fine", "final", "chosen lr", "final runs: mean score"]


def _locked(logdir: Path) -> bool:
    try:
        with open(logdir / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False
