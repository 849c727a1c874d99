"""Statistics of seeds: a `Stat` (a number with its n, spread, 95% interval, per-seed values and
how it was computed), the norm's effect (`compare`: paired by seed, Student-t or bootstrap; Welch
or an unpaired bootstrap when the arms' seeds differ), contrasts of effects, per-cell verdicts,
Holm's correction for a claim over several cells (`every_cell`), and the seeds a claim would need.
It works on numbers keyed by seed: it must not know the long table, tables or output formats
beyond a Stat's one-line text (`signed`) and the verdicts' marks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


ALPHA = 0.05  # 95% intervals; Holm's correction keeps a claim over several cells at this level
INTERVALS = ("t", "bootstrap")
ADVISED_SEEDS = 5
BOOTSTRAP = 2000


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
    bounded: bool = False  # the interval was cut to what accuracies can reach
    withheld: str | None = None  # why it has no interval although it has seeds (e.g. split by stability)
    unstable: list | None = None  # runs behind it that had not trained (kbn.report.measures.mark_stability)
    accuracy: bool = False  # an accuracy (unsigned in print), not a difference or effect (always signed)

    @property
    def interval(self) -> bool:
        """Whether it has a 95% interval."""
        return self.low is not None

    @property
    def paired(self) -> bool:
        """Whether it is the mean of per-seed effects of arms that ran the same seeds."""
        return self.method.startswith("paired")


METHODS = {
    "paired t": "paired by seed (both arms of a seed share data order and initial weights): the mean of the "
                "per-seed values, Student-t 95% interval (n − 1 degrees of freedom)",
    "paired bootstrap": f"paired by seed: the mean of the per-seed values, 95% percentile bootstrap interval "
                        f"({BOOTSTRAP} resamples of the seeds)",
    "paired t (log)": "paired by seed: the geometric mean of the per-seed ratios, Student-t 95% interval on their "
                      "logarithms (n − 1 degrees of freedom), over the seeds where both arms reached the target",
    "paired bootstrap (log)": f"paired by seed: the geometric mean of the per-seed ratios, 95% percentile bootstrap "
                              f"interval of the mean log ({BOOTSTRAP} resamples of the seeds), over the seeds where "
                              "both arms reached the target",
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
    return Stat(float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else None, n=len(v), seeds=by_seed,
                accuracy=True)


def t_interval(values) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the mean of `values` with its Student-t 95% interval (n − 1 degrees of
    freedom), uncut; (mean, None, None) for one value."""
    v = np.asarray(values, float)
    if len(v) < 2:
        return float(v.mean()), None, None
    half = _t(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean()) - half, float(v.mean()) + half


def mean_interval(values, seeds=None) -> Stat:
    """Accuracies (fractions) as percent: their mean with a Student-t 95% interval over seeds (n − 1
    degrees of freedom), cut to what an accuracy can reach ([0, 100]); a point alone for one seed."""
    st = acc_stat(values, seeds)
    if st.n < 2:
        return st
    _, low, high = t_interval(list(st.seeds.values()))
    return dataclasses.replace(st, low=max(low, 0.0), high=min(high, 100.0))


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
    if stat.interval:
        # A symmetric interval can pass what accuracies allow (a paired-t interval on effects of
        # +2 and +86 points reaches +178): cut it there, and say so. With x the accuracy without the
        # norm, y - x lies in [-x, 100 - x] and rel = (y - x)/(100 - x) in [-x/(100 - x), 1].
        xm = np.array(list(x.values()), float)
        lo, hi = (-xm.mean(), 100 - xm.mean()) if quantity == "diff" else \
            (float(np.mean(np.where(xm >= 100, 0.0, -xm / np.maximum(100 - xm, 1e-12)))), 1.0)
        stat.bounded = stat.low < lo - 1e-9 or stat.high > hi + 1e-9
        stat.low, stat.high = max(stat.low, lo), min(stat.high, hi)
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


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar test of paired yes/no outcomes: of the b + c discordant pairs, b went
    one way and c the other; under "no difference" each way is a fair coin, so the p-value is the
    two-sided binomial tail (exact: the few runs of a sweep are far from the chi-square's large-sample
    regime). 1.0 when no pair is discordant."""
    from scipy import stats

    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(b, c), n, 0.5)))


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


def pool(stats: list[Stat | None]) -> Stat | None:
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


MARKS = {"supported": "✓", "contradicted": "✗", "inconclusive": "?", "point estimate only": "·",
         "arms differ in stability": "⚠"}


def signed(s: Stat, plus: bool = True) -> str:
    """A Stat as plain text: its value (signed unless plus=False) and [low, high] when it has an
    interval."""
    f = "{:+.2f}" if plus else "{:.2f}"
    return f.format(s.value) + (f" [{f.format(s.low)}, {f.format(s.high)}]" if s.interval else "")
