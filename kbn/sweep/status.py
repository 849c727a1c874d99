"""A sweep folder as its files tell it (`folder_progress`): per-cell progress from the trial files
(read without Keras Tuner) and the run folders, every problem found, and `kbn status`'s records,
rows and lines. Read-only: it must not train or import Keras.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import NamedTuple

from kbn.core.config import SweepConfig, cells_by_key, off_plan
from kbn.sweep import trials
from kbn.sweep.folder import check_trial_run, is_locked, load_folder_sweep
from kbn.sweep.plan import COMPLETED, FAILED, cell_progress, score_value, trial_key


def failure_summary(message: str | None) -> str:
    """The first line of a failed trial's message (kbn stores the exception's line first)."""
    lines = (message or "").strip().splitlines()
    return lines[0] if lines else "unknown error"


class Problem(NamedTuple):
    cell: str  # "" for a file no cell can be named for
    kind: str  # failed | unreadable | damaged | lost (a finished run's folder, result.json or model.keras)
    text: str

    def line(self) -> str:
        return f"{self.cell + ': ' if self.cell else ''}{self.text}"


@dataclasses.dataclass
class FolderState:
    """A sweep folder as its files tell it: per-cell progress, trials not ended per cell, and every
    problem found (failed trials, unreadable trial files, damaged run folders), each one line."""

    sweep: SweepConfig
    progress: dict[str, dict]
    running: collections.Counter
    problems: list[Problem]


def folder_progress(logdir: Path) -> FolderState:
    """Per-cell progress read straight from the trial files (no Keras Tuner needed). A completed trial
    whose run folder is damaged or lost (`check_trial_run`) counts as not done (a resume redoes it); a
    failed one holds its cell."""
    logdir = Path(logdir)
    sweep = load_folder_sweep(logdir)
    cells = cells_by_key(sweep)
    scores, failed, running, outcomes = {}, set(), collections.Counter(), {}
    problems = []
    for t in trials.scan(logdir):
        tid = f"trial_{t.trial_id}"
        if isinstance(t, trials.Unreadable):
            problems.append(Problem("", "unreadable", f"tuner/{tid}/trial.json is unreadable ({t.why}); "
                                    "its trial runs again on resume"))
            continue
        values, status, cell = t.values, t.status, t.cell
        if cell not in cells:
            problems.append(Problem("", "unreadable", f"tuner/{tid} belongs to no cell of this sweep ({cell})"))
            continue
        off = off_plan(sweep, cells[cell], values)
        if off:
            problems.append(Problem("", "unreadable", f"tuner/{tid}/trial.json: {off}; set aside and its work "
                                    "planned again on resume"))
            continue
        what = f"{values['phase']} lr {values['lr']:.4g}" + (f" seed {values['seed']}" if values["phase"] == "final" else "")
        if status == COMPLETED:
            folder, check = check_trial_run(sweep, logdir, values, cells)
            if check.damaged:
                rel = folder.relative_to(logdir).as_posix()
                problems.append(Problem(cell, "lost" if check.lost else "damaged",
                                        f"{rel}: {check.problem}; redone on resume"))
            else:
                scores[trial_key(values)] = score_value(t.score)
                outcomes[trial_key(values)] = check.outcome.kind
        elif status == FAILED:
            failed.add(trial_key(values))
            problems.append(Problem(cell, "failed", f"{tid} ({what}) failed: {failure_summary(t.message)}; "
                                    "retried on resume"))
        else:
            running[cell] += 1
    progress = {c.key: cell_progress(sweep, c, scores, failed, outcomes) for c in sweep.cells()}
    return FolderState(sweep, progress, running, problems)


def status_records(logdir: Path, live: bool | None = None, state: FolderState | None = None) -> list[dict]:
    """One record per cell (per cell and rate for a list of shared rates), in numbers: STATUS_FIELDS.
    Trial counts as done and planned; fine_* None until the coarse grid has a best; chosen_lr None
    while searching; final_mean_score a fraction (None without final runs); final_unstable the count
    of final runs that did not train, final_unstable_kinds what they were ('2 collapsed', '' if none)."""
    state = state or folder_progress(logdir)
    if live is None:
        live = is_locked(Path(logdir))
    cells = cells_by_key(state.sweep)
    rows = []
    for key, p in state.progress.items():
        # a list of shared rates: a row per rate, each with its own final runs
        parts = [{**p, **r, "chosen": lr} for lr, r in p["by_rate"].items()] if state.sweep.rate_list else [p]
        rows += [_status_record(state, cells[key], part, live) for part in parts]
    return rows


STATUS_FIELDS = ["cell", "dataset", "arch", "norm", "optimizer", "state", "coarse_done", "coarse_planned", "fine_done",
                 "fine_planned", "final_done", "final_planned", "chosen_lr", "final_mean_score", "final_unstable",
                 "final_unstable_kinds"]


def _status_record(state: FolderState, cell, p: dict, live: bool) -> dict:
    mine = {pr.kind for pr in state.problems if pr.cell == cell.key}
    started = state.running[cell.key] or p["coarse"][0] or p["final"][0] or mine
    if "failed" in mine:
        cell_state = "failed"
    elif p["final"][0] == p["final"][1]:
        cell_state = "done"
    elif started:
        cell_state = "running" if live else "stopped"
    else:
        cell_state = "pending"
    scores = p["final_scores"]
    fine = p["fine"] if p["coarse_best"] else (None, None)
    return {"cell": cell.key, "dataset": cell.dataset, "arch": cell.arch, "norm": cell.norm,
            "optimizer": cell.optimizer, "state": cell_state, "coarse_done": p["coarse"][0],
            "coarse_planned": p["coarse"][1], "fine_done": fine[0], "fine_planned": fine[1],
            "final_done": p["final"][0], "final_planned": p["final"][1], "chosen_lr": p["chosen"],
            "final_mean_score": sum(scores) / len(scores) if scores else None,
            "final_unstable": sum(k != "trained" for k in p["final_outcomes"]),
            "final_unstable_kinds": "" if unstable_text(p["final_outcomes"]) == "-" else unstable_text(p["final_outcomes"])}


def status_rows(logdir: Path, live: bool | None = None, state: FolderState | None = None) -> list[list]:
    """`kbn status`'s rows: status_records as text. Scores are accuracies (fractions): percent with 2
    places, as the report prints them; learning rates in one scientific format, so a column of 0.1,
    0.0316 and 0.00316 lines up."""
    return [[r["cell"], r["state"], f"{r['coarse_done']}/{r['coarse_planned']}",
             "-" if r["fine_done"] is None else f"{r['fine_done']}/{r['fine_planned']}",
             f"{r['final_done']}/{r['final_planned']}", "-" if r["chosen_lr"] is None else f"{r['chosen_lr']:.2e}",
             "-" if r["final_mean_score"] is None else f"{100 * r['final_mean_score']:.2f}",
             r["final_unstable_kinds"] or "-"] for r in status_records(logdir, live, state)]


def unstable_text(kinds: list[str]) -> str:
    """The final runs that did not train, counted by kind: '2 collapsed, 1 never learned'; '-' if none."""
    counts = collections.Counter(k for k in kinds if k != "trained")
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "-"


def problem_lines(state: FolderState, kinds=("failed", "unreadable", "damaged", "lost")) -> list[str]:
    """The problems of a sweep folder, one line each."""
    return [pr.line() for pr in state.problems if pr.kind in kinds]


# the last header names the score: `kbn status` fills in the sweep's select_on (validation or test)
STATUS_HEADERS = ["cell", "state", "coarse", "fine", "final", "chosen lr", "final runs: mean {select_on} accuracy (%)",
                  "final runs that did not train"]
