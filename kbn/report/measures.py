"""The measures of one cell that the tables and the findings both read: the norm's effect at an
epoch (`norm_effect`) or at the last evaluation (`final_effect`), which split a cell's curves are
read on, and how fast each arm converges (`convergence`). It turns `Results` into `Stat`s: it must
not know tables, output formats or the thesis's claims."""

from __future__ import annotations

import dataclasses

import numpy as np

from kbn.core import registry
from kbn.core.stability import Outcome, near_chance, summarize
from kbn.core.stats import Stat, compare, one_sample
from kbn.report.labels import display_name, optimizer_name
from kbn.report.results import Results


@dataclasses.dataclass
class Stability:
    """Which seeds of each arm of a cell had not trained (kbn.core.stability) by an evaluation point: a
    run that never learned, at every point; one that collapsed or diverged, from where it fell.
    `none`/`norm`: seed -> Outcome."""

    none: dict[int, Outcome]
    norm: dict[int, Outcome]
    x: float | None  # the evaluation point; None: the run's end
    axis: str
    label: str  # the cell, as the notes name it ("SGD, Fashion-MNIST + deep MLP")
    norm_name: str

    def down(self, arm: str) -> list[int]:
        """The seeds of `arm` ('none' or 'norm') that had not trained by x."""
        return [s for s, o in sorted(getattr(self, arm).items()) if _down(o, self.x)]

    @property
    def paired(self) -> bool:
        return set(self.none) == set(self.norm)

    @property
    def clean(self) -> bool:
        return not self.down("none") and not self.down("norm")

    @property
    def discordant(self) -> list[int]:
        """Paired seeds where one arm trained and the other did not."""
        a, b = set(self.down("none")), set(self.down("norm"))
        return sorted(a ^ b) if self.paired else []

    @property
    def differs(self) -> bool:
        """The arms differ in stability: a seed trained in one arm and not in the other (unpaired:
        the arms' shares of runs that did not train differ)."""
        if not self.none or not self.norm:  # one arm alone (an accuracy cell): nothing to differ from
            return False
        if self.paired:
            return bool(self.discordant)
        return len(self.down("none")) / len(self.none) != len(self.down("norm")) / len(self.norm)

    @property
    def split(self) -> bool:
        """The per-seed effects are of two kinds: some seed pairs differ in stability and others do
        not, or they differ both ways. Their mean is then a mixture, and a t interval over it (which
        assumes one roughly symmetric population of effects) is not honest."""
        if not self.differs:
            return False
        if not self.paired:
            return any(0 < len(self.down(arm)) < len(getattr(self, arm)) for arm in ("none", "norm"))
        none, norm = set(self.down("none")), set(self.down("norm"))
        one_way = not (none & set(self.discordant)) or not (norm & set(self.discordant))
        return not (one_way and len(self.discordant) == len(self.none))

    def arms(self, which=("none", "norm")) -> list[str]:
        """The arms (of `which`) with runs that did not train, a phrase each: 'SGD, MNIST + MLP, none:
        2 of 3 seeds collapsed after epoch 15–35'."""
        out = []
        for arm, name in (("none", "none"), ("norm", self.norm_name)):
            outs = [getattr(self, arm)[s] for s in self.down(arm)] if arm in which else []
            if outs:
                out.append(f"{self.label}, {name}: {summarize(outs, self.axis, len(getattr(self, arm)))}")
        return out


def _down(o: Outcome, x: float | None) -> bool:
    if not o.unstable:
        return False
    if o.kind == "never learned" or x is None or o.fell_at is None:
        return True
    return x >= o.fell_at


def stability(res: Results, d, a, norm, opt, x: float | None = None) -> Stability | None:
    """The Stability of one cell (none vs `norm`) at evaluation point x (None: the runs' end)."""
    none, other = res.outcomes(d, a, "none", opt), res.outcomes(d, a, norm, opt) if norm != "none" else {}
    if not none and not other:
        return None
    return Stability(none, other, x, res.axis(d, a), f"{optimizer_name(opt)}, {display_name(d, a)}", norm)


def mark_stability(stat: Stat | None, st: Stability | None, arms=("none", "norm")) -> Stat | None:
    """Note on `stat` the runs behind it that had not trained (Stat.unstable: the arms' phrases). An
    effect whose seed pairs split by stability loses its interval, which says why (Stat.withheld)."""
    if stat is None or st is None:
        return stat
    phrases = st.arms(arms)
    if not phrases:
        return stat
    stat.unstable = phrases
    if set(arms) == {"none", "norm"} and st.split and stat.interval:
        k = len(st.discordant) if st.paired else None
        stat.low = stat.high = stat.p = None
        stat.withheld = (f"no interval: {k} of {len(st.none)} seed pairs differ in stability" if k is not None else
                         "no interval: the arms' runs split by stability")
    return stat


def norm_effect(res, d, a, norm, opt, split, epoch, quantity="rel"):
    """The norm's effect on one cell at one epoch (rel, or 'diff' in points), against none; marked
    where runs behind it had not trained by then (`mark_stability`)."""
    x = res.acc_by_seed(d, a, "none", opt, split, epoch)
    y = res.acc_by_seed(d, a, norm, opt, split, epoch)
    if not x or not y:
        return None
    return mark_stability(compare(x, y, quantity, res.interval), stability(res, d, a, norm, opt, epoch))


def axes_of(res: Results, pairs=None) -> set[str]:
    """What the (dataset, network) pairs' evaluations count: {'epoch'}, {'step'} or both."""
    return {res.axis(d, a) for d, a in (pairs or res.all_pairs())}


def last_point(res: Results, pairs=None) -> str:
    """'last epoch', 'last step', or 'last evaluation' when the pairs count both."""
    axes = axes_of(res, pairs)
    return f"last {next(iter(axes))}" if len(axes) == 1 else "last evaluation"


def units(res: Results, pairs=None) -> str:
    """'epochs', 'steps', or 'epochs (steps)' when the pairs count both."""
    axes = axes_of(res, pairs)
    return f"{next(iter(axes))}s" if len(axes) == 1 else "epochs (steps)"


def curve_split(res: Results, d, a) -> str:
    """Per-epoch claims read validation, else test (published tables often have only test)."""
    return "validation" if res.has(d, a, "validation") else "test"


def final_effect(res: Results, d, a, norm, opt, quantity="rel") -> Stat | None:
    """The norm's effect on test accuracy at the cell's last epoch (or step)."""
    last = res.last(d, a, norm, opt, "test")
    x, y = (res.at(d, a, n, opt, "test", *last) for n in ("none", norm)) if last else (None, None)
    if not x or not y:
        return None
    return mark_stability(compare(x, y, quantity, res.interval), stability(res, d, a, norm, opt))


def _first_reach(curve: dict[int, float], target: float) -> int | None:
    """The first epoch (or step) at which a curve reaches `target`, None if it never does."""
    return next((x for x in sorted(curve) if curve[x] >= target - 1e-9), None)


def _mean_curve(curves: dict[int, dict[int, float]]) -> dict[int, float]:
    """The seed-mean curve in percent, over the epochs every seed has."""
    common = set.intersection(*(set(c) for c in curves.values()))
    return {x: 100 * float(np.mean([c[x] for c in curves.values()])) for x in sorted(common)}


# The convergence ladder: how long each arm takes to get this far of the way from chance to the
# no-norm arm's best accuracy (its own seed's). None's best, not its final value: a baseline that
# collapses ends at chance, and "reaching none's final accuracy" would then take one epoch.
LADDER = (0.5, 0.9, 0.99, 1.0)
SUMMARY_RUNG = 0.9  # the summary's one speed-up


@dataclasses.dataclass
class Rung:
    """One rung of the ladder for one cell: the target (mean over seeds, percent), each arm's epochs
    (or steps) to it per seed (None: not reached), and the speed-ups none / norm in epochs and in
    seconds as geometric means over the seeds where both arms reached it (interval on the logs)."""

    q: float
    target: float
    none_seed: dict[int, int | None]
    norm_seed: dict[int, int | None]
    speedup: Stat | None
    speedup_seconds: Stat | None

    def reached(self, arm: str) -> int:
        return sum(v is not None for v in getattr(self, f"{arm}_seed").values())

    def median(self, arm: str) -> float | None:
        """The median epochs (steps) to the target over the seeds that reached it."""
        v = [x for x in getattr(self, f"{arm}_seed").values() if x is not None]
        return float(np.median(v)) if v else None


def ratio_stat(logs: dict[int, float], interval: str) -> Stat | None:
    """A ratio's geometric mean over seeds, from the per-seed logarithms, with the 95% interval of
    their mean taken back to ratios (a ratio's log is what is near-symmetric)."""
    if not logs:
        return None
    st = one_sample(logs, interval)
    back = Stat(float(np.exp(st.value)), n=st.n, std=st.std, seeds={k: float(np.exp(v)) for k, v in logs.items()},
                p=st.p, method=f"{st.method} (log)" if st.method else "")
    if st.interval:
        back.low, back.high = float(np.exp(st.low)), float(np.exp(st.high))
    return back


def _ladder(res: Results, d, a, xc: dict, yc: dict, xs: dict, ys: dict) -> tuple[list[Rung], int]:
    """The rungs of one cell, paired by seed (the seed-mean curves when the arms' seeds differ), and
    the seeds left out because none never rose above chance (no target to reach)."""
    chance = 1 / (registry.classes(d) or 10)
    if set(xc) != set(yc):  # unpaired: the seed-mean curves as one pseudo-seed, a point estimate
        xc, yc = {0: {k: v / 100 for k, v in _mean_curve(xc).items()}}, {0: {k: v / 100 for k, v in _mean_curve(yc).items()}}
        xs = ys = {}
    seeds = [s for s in sorted(xc) if xc[s] and max(xc[s].values()) > near_chance(chance)]
    rungs = []
    for q in LADDER:
        targets = {s: chance + q * (max(xc[s].values()) - chance) for s in seeds}
        none = {s: _first_reach(xc[s], targets[s]) for s in seeds}
        norm = {s: _first_reach(yc[s], targets[s]) for s in seeds}
        both = [s for s in seeds if none[s] and norm[s]]
        logs = {s: float(np.log(none[s] / norm[s])) for s in both}
        timed = [s for s in both if none[s] in xs.get(s, {}) and norm[s] in ys.get(s, {})
                 and xs[s][none[s]] > 0 and ys[s][norm[s]] > 0]
        secs = {s: float(np.log(xs[s][none[s]] / ys[s][norm[s]])) for s in timed} if len(timed) == len(both) else {}
        rungs.append(Rung(q, 100 * float(np.mean(list(targets.values()))) if seeds else float("nan"), none, norm,
                          ratio_stat(logs, res.interval), ratio_stat(secs, res.interval)))
    return rungs, len(xc) - len(seeds)


def convergence(res: Results, d: str, a: str, norm: str, opt: str, split: str = "validation") -> dict | None:
    """How fast each arm converges on `split`: the ladder (`LADDER`: the epochs, or steps, each arm
    takes to get 50/90/99/100 % of the way from chance to none's best accuracy, per seed, with the
    speed-up none / norm in epochs and in seconds), `speedup`/`speedup_seconds` at SUMMARY_RUNG, and
    the area under each curve as the mean accuracy over the evaluations (percent), with the norm's
    gain in it paired by seed. None without both arms."""
    axis, xc, _ = res.curves(d, a, "none", opt, split)
    _, yc, _ = res.curves(d, a, norm, opt, split)
    if not xc or not yc:
        return None
    xm, ym = _mean_curve(xc), _mean_curve(yc)
    if not xm or not ym:
        return None
    rungs, skipped = _ladder(res, d, a, xc, yc, res.seconds(d, a, "none", opt, split),
                             res.seconds(d, a, norm, opt, split))
    top = next(r for r in rungs if r.q == SUMMARY_RUNG)
    out = {"axis": axis, "rungs": rungs, "never_learned_none": skipped, "summary_rung": top,
           "speedup": top.speedup.value if top.speedup else None,
           "speedup_seconds": top.speedup_seconds.value if top.speedup_seconds else None}
    out["auc_none"], out["auc_norm"] = float(np.mean(list(xm.values()))), float(np.mean(list(ym.values())))
    auc = {arm: {s: float(np.mean(list(c.values()))) for s, c in cs.items()} for arm, cs in (("x", xc), ("y", yc))}
    out["auc_diff"] = compare(auc["x"], auc["y"], "diff", res.interval)
    return out


def poster_steps(steps: list[int]) -> tuple[list[int], int]:
    """The columns of a poster table and its regular stride. Runs with dense early evaluations
    (eval_steps) show the regular grid (its stride: the wider of the last two gaps, since the dense
    points sit early and the last one may be a short remainder up to total_steps) and the early steps
    1000 and 100; the rest are in the tidy CSV, the convergence table and the curves. (The most common
    gap was the stride before; 13 dense points below 10,000 steps of a 10,000-step run made it 50.)"""
    gaps = [b - a for a, b in zip([0] + steps, steps)]
    every = max(gaps[-2:])
    if len(steps) <= 12:
        return steps, every
    return [s for s in steps if s % every == 0 or s in (100, 1000)], every
