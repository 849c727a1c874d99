"""What a sweep has left to do, derived from the scores of its ended trials alone: pure functions
over scores keyed (cell, phase, lr, seed), shared by the oracle that hands out trials
(kbn.sweep.oracle) and by `kbn status` (kbn.sweep.status), which read the trial files.
It must not read files, train, import Keras, print or know how a report computes its numbers.
"""

from __future__ import annotations

import math

from kbn.core.config import Cell, SweepConfig


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


# How a searched rate's trainings ended (kbn.core.stability's kinds): a rate is unstable when any of its
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
    the completed ones ended (`trial_key` -> kbn.core.stability kind; absent: trained).

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
