"""What a sweep has left to do, derived from the results of its ended trials alone.
It must not train, import Keras or know how a report computes its numbers.

Pure functions over scores keyed (cell, phase, lr, seed), shared by the oracle that hands out trials
(kbn.tune) and by `kbn status`, which reads the trial files without Keras Tuner.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from pathlib import Path
from typing import NamedTuple

from kbn import trials
from kbn.config import Cell, SweepConfig, cells_by_key, off_plan
from kbn.runlog import RunCheck, check_run
from kbn.sweep_folder import is_locked, load_folder_sweep

# Keras Tuner's TrialStatus values. Only a COMPLETED trial is a result; a FAILED one (a crash that is not
# a training outcome) holds no score, so its cell never chooses a learning rate from it, and a resumed
# sweep runs it again. Divergence is a result: a COMPLETED trial scored as chance.
COMPLETED, FAILED = "COMPLETED", "FAILED"


def _item(cell: Cell, phase: str, lr: float, seed: int) -> dict:
    return {"cell": cell.key, "phase": phase, "lr": float(lr), "seed": int(seed)}


def trial_key(values: dict) -> tuple:
    return values["cell"], values["phase"], float(values["lr"]), int(values["seed"])


def _best(candidates: list[tuple[float, float]]) -> float:
    """The learning rate with the highest score; ties go to the earlier one (grid order)."""
    return max(candidates, key=lambda c: c[1])[0]


# How a searched rate's trainings ended (kbn.stability's kinds): a rate is unstable when any of its
# search trainings diverged or collapsed, or never learned while a smaller rate learned (too large a
# step kills the network rather than slowing it).
UNSTABLE_KINDS = ("diverged", "collapsed")


def unstable_rates(kinds: dict[float, list[str]]) -> set[float]:
    """The searched rates (lr -> its search trainings' outcome kinds) that are unstable."""
    out, learned_below = set(), False
    for lr in sorted(kinds):
        ks = kinds[lr]
        if any(k in UNSTABLE_KINDS for k in ks) or (learned_below and "never learned" in ks):
            out.add(lr)
        learned_below |= any(k in ("trained", "collapsed") for k in ks)
    return out


def choose(scored: list[tuple[float, float]], kinds: dict[float, list[str]], rule: str,
           edge: bool = True) -> tuple[float, list]:
    """The chosen rate of scored (lr, mean score) pairs, and the better-scoring rates the rule passed
    over, each (lr, why). rule "best": the highest score. "stable": the highest score among the rates
    that are stable and (with `edge`) whose next larger searched rate is stable too -- the best rate
    sits near the edge of stability, and a rate whose neighbour fell over in a short search often
    falls over itself in a longer final run; with no such rate, the highest score. The coarse grid is
    read without `edge`: a decade below an unstable rate is not yet its edge, and the fine grid placed
    around the coarse winner is what resolves where the edge is."""
    best = _best(scored)
    if rule == "best":
        return best, []
    bad = unstable_rates(kinds)
    order = sorted(kinds)
    above = {lr: next((r for r in order if r > lr), None) for lr in order}

    def why(lr):
        if lr in bad:
            return "unstable in the search"
        if edge and above[lr] in bad:
            return f"its larger neighbour {above[lr]:g} is unstable"
        return None

    eligible = [(lr, sc) for lr, sc in scored if why(lr) is None]
    chosen = _best(eligible) if eligible else best
    score = dict(scored)
    passed = [(lr, why(lr)) for lr, sc in sorted(scored) if sc > score[chosen] and why(lr) is not None]
    return chosen, passed


def cell_progress(sweep: SweepConfig, cell: Cell, scores: dict[tuple, float], failed=frozenset(),
                  outcomes: dict[tuple, str] | None = None) -> dict:
    """Where a cell stands, from the scores of its completed trials (`trial_key` -> score), the
    keys of its failed ones (never run again by this process; a resumed sweep retries them) and how
    the completed ones ended (`trial_key` -> kbn.stability kind; absent: trained).

    Returns todo (items runnable now, in order), failed (items held up by a failure), counts per
    phase, the coarse winner, the chosen lr, the rates the selection rule passed over (lr, why),
    and the final runs' scores and outcome kinds."""
    outcomes = outcomes or {}
    out = {"todo": [], "failed": [], "coarse": [0, 0], "fine": [0, 0], "final": [0, len(sweep.seeds)],
           "coarse_best": None, "chosen": None, "passed_over": [], "final_scores": [], "final_outcomes": [],
           "by_rate": {}}
    kinds: dict[float, list[str]] = {}

    def phase(name, lrs):
        """A search phase: every lr under every search seed; an lr scores the mean over its seeds."""
        keys = [(cell.key, name, float(lr), s) for lr in lrs for s in sweep.search_seeds]
        done = [k for k in keys if k in scores]
        out[name] = [len(done), len(keys)]
        for k in keys:
            if k not in scores:
                out["failed" if k in failed else "todo"].append(_item(cell, name, k[2], k[3]))
        if len(done) < len(keys):
            return None
        for k in keys:
            kinds.setdefault(k[2], []).append(outcomes.get(k, "trained"))
        return [(float(lr), sum(scores[(cell.key, name, float(lr), s)] for s in sweep.search_seeds)
                 / len(sweep.search_seeds)) for lr in lrs]

    if sweep.lr is not None:  # the fixed-rate protocol: no search, the final runs at the sweep's rate(s)
        rates = [float(r) for r in sweep.rates]
        out["chosen"] = rates if sweep.rate_list else rates[0]
        out["final"] = [0, len(sweep.seeds) * len(rates)]
    else:
        coarse = phase("coarse", sweep.coarse_grid(cell.optimizer))
        if coarse is None:
            return out
        out["coarse_best"], _ = choose(coarse, kinds, sweep.selection, edge=False)
        fine_grid = sweep.fine_grid(cell.optimizer, out["coarse_best"])
        out["fine"] = [0, len(fine_grid)]
        fine = phase("fine", fine_grid)
        if fine is None:
            return out
        chosen, out["passed_over"] = choose(coarse + fine, kinds, sweep.selection)
        out["chosen"] = chosen
        rates = [float(chosen)]
    out["by_rate"] = {}  # rate -> its own final runs: final [done, planned], final_scores, final_outcomes
    for lr in rates:
        mine = out["by_rate"][lr] = {"final": [0, len(sweep.seeds)], "final_scores": [], "final_outcomes": []}
        for seed in sweep.seeds:
            k = (cell.key, "final", lr, seed)
            if k in scores:
                for where in (out, mine):
                    where["final"][0] += 1
                    where["final_scores"].append(scores[k])
                    where["final_outcomes"].append(outcomes.get(k, "trained"))
            else:
                out["failed" if k in failed else "todo"].append(_item(cell, "final", lr, seed))
    return out


def planned_trials(sweep: SweepConfig, progress: dict[str, dict] | None = None) -> int:
    """Trials the sweep runs in all. A cell's fine grid is known once its coarse winner is (rounded
    values that repeat are one trial); before that, its nominal size is counted."""
    total = 0
    for c in sweep.cells():
        best = (progress or {}).get(c.key, {}).get("coarse_best")
        n_fine = len(sweep.fine_grid(c.optimizer, best)) if best is not None else sweep.nominal_fine(c.optimizer)
        total += (len(sweep.coarse_grid(c.optimizer)) + n_fine) * len(sweep.search_seeds) \
            + len(sweep.seeds) * max(len(sweep.rates), 1)
    return total


def trial_length(sweep: SweepConfig, phase: str) -> int:
    """A trial's training length in the sweep's own unit (epochs, or steps for step-based sweeps):
    what an ETA weighs trials by, since a final run may be 5-25x longer than a search trial."""
    def length(final):
        steps = sweep.total_steps if final else (sweep.search_total_steps or sweep.total_steps)
        epochs = sweep.epochs if final else (sweep.search_epochs or sweep.epochs)
        return steps, epochs

    # steps where both phases count steps; else epochs (the steps per epoch are the data's business)
    (s_final, e_final), (s_search, e_search) = length(True), length(False)
    by_steps = bool(sweep.eval_every_steps and s_final and s_search)
    if phase == "final":
        return s_final if by_steps else e_final
    return s_search if by_steps else e_search


def work_left(sweep: SweepConfig, progress: dict[str, dict]) -> int:
    """Training left in the sweep, in `trial_length` units (fine grids not yet placed at their largest)."""
    search, final = trial_length(sweep, "coarse"), trial_length(sweep, "final")
    left = 0
    for c in sweep.cells():
        p = progress[c.key]
        fine_total = p["fine"][1] if p["coarse_best"] is not None else \
            sweep.nominal_fine(c.optimizer) * len(sweep.search_seeds)
        left += (p["coarse"][1] - p["coarse"][0] + fine_total - p["fine"][0]) * search
        left += (p["final"][1] - p["final"][0]) * final
    return left


def score_value(score) -> float:
    """A completed trial's score for ranking; NaN (Keras Tuner's mark of a broken score) ranks last."""
    return -math.inf if score is None or math.isnan(score) else float(score)


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

