"""The measures of one cell that the tables and the findings both read: the norm's effect at an
epoch (`norm_effect`) or at the last evaluation (`final_effect`), which split a cell's curves are
read on, and how fast each arm converges (`convergence`). It turns `Results` into `Stat`s: it must
not know tables, output formats or the thesis's claims."""

from __future__ import annotations

import numpy as np

from kbn.report.results import Results
from kbn.report.stats import Stat, compare


def norm_effect(res, d, a, norm, opt, split, epoch, quantity="rel"):
    """The norm's effect on one cell at one epoch (rel, or 'diff' in points), against none."""
    x = res.acc_by_seed(d, a, "none", opt, split, epoch)
    y = res.acc_by_seed(d, a, norm, opt, split, epoch)
    return None if not x or not y else compare(x, y, quantity, res.interval)


def curve_split(res: Results, d, a) -> str:
    """Per-epoch claims read validation, else test (published tables often have only test)."""
    return "validation" if res.has(d, a, "validation") else "test"


def final_effect(res: Results, d, a, norm, opt, quantity="rel") -> Stat | None:
    """The norm's effect on test accuracy at the cell's last epoch (or step)."""
    last = res.last(d, a, norm, opt, "test")
    x, y = (res.at(d, a, n, opt, "test", *last) for n in ("none", norm)) if last else (None, None)
    return compare(x, y, quantity, res.interval) if x and y else None


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


def poster_steps(steps: list[int]) -> tuple[list[int], int]:
    """The columns of a poster table and its regular stride. Runs with dense early evaluations
    (eval_steps) show the regular grid (the stride most consecutive evaluations are apart) and the
    early steps 1000 and 100; the rest are in the tidy CSV, the convergence table and the curves."""
    gaps = [b - a for a, b in zip([0] + steps, steps)]
    every = max(set(gaps), key=lambda g: (gaps.count(g), g))
    if len(steps) <= 12:
        return steps, every
    return [s for s in steps if s % every == 0 or s in (100, 1000)], every
