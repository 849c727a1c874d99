"""The thesis's findings (SPEC.md's Study 1 conclusions, and the poster's), each checked against the
data by one small function per claim; `findings` runs them all. A claim over several cells is
read with Holm's correction (stats.every_cell). It states claims and their evidence: it must not
know how the findings are printed (render.render_findings)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kbn.core import registry
from kbn.core.stats import (ALPHA, Stat, compare, contrast, every_cell, mcnemar, one_sample, pool, seeds_to_resolve,
                            signed)
from kbn.report.labels import arch_name, display_name, optimizer_name
from kbn.report.measures import (SUMMARY_RUNG, Stability, convergence, curve_split, final_effect, last_point,
                                 norm_effect, poster_steps, stability, units)
from kbn.report.results import Results

DEEP = registry.DEEP_TWINS
CHANCE = 15.0  # percent: "near chance" for 10 classes (chance itself is 10%); scaled by 10 / classes


def _cell_name(d, a, opt=None) -> str:
    return display_name(d, a) if opt is None else f"{optimizer_name(opt)}, {display_name(d, a)}"


def _claim(claim: str, cells: dict[str, Stat], what: str, missing: str, unit: str = "",
           aside: dict[str, Stability] | None = None) -> dict:
    """{claim, verdict, evidence, cells} for a claim that `what` is positive in every cell (Holm's
    correction across them); `cells` names the cells that decide the verdict. `aside`: cells whose
    arms differ in stability (a seed trained in one arm and not in the other): their numbers say
    whether training worked, not how well, so they are left out of the test and named."""
    cells = {k: v for k, v in cells.items() if v is not None}
    aside = {k: v for k, v in (aside or {}).items() if k in cells}
    cells = {k: v for k, v in cells.items() if k not in aside}
    left = ""
    if aside:
        left = (f"; left out, {len(aside)} cell(s) whose arms differ in stability (see the stability finding): "
                + "; ".join(", ".join(st.arms()) for st in aside.values()))
    if not cells:
        return {"claim": claim, "verdict": "not testable", "evidence": (missing if not aside else
                f"every cell's arms differ in stability{left}"), "cells": list(aside)}
    out = _holm_claim(claim, cells, what, unit)
    out["evidence"] += left
    return out


def _holm_claim(claim: str, cells: dict[str, Stat], what: str, unit: str) -> dict:
    """The verdict and evidence of `_claim` over cells that all have a value."""
    v, deciding = every_cell(cells)
    listed = "; ".join(f"{k}: {signed(cells[k])}{unit}" for k in deciding)
    n = len(cells)
    if v == "point estimate only":
        holds = all(c.value > 0 for c in cells.values())
        evidence = (f"{what}; one seed, so no interval: at the point estimates the claim "
                    f"{'holds in all' if holds else 'fails in'} {n if holds else len(deciding)} of {n} cell(s)"
                    + ("" if holds else f": {listed}"))
    elif v == "supported":
        evidence = f"{what}; above 0 in all {n} cell(s) after Holm's correction; the weakest: {listed}"
    elif v == "contradicted":
        evidence = f"{what}; below 0 after Holm's correction in {len(deciding)} of {n} cell(s): {listed}"
    else:
        # Holm's last step tests the k unresolved cells at ALPHA / k at the least
        needs = [seeds_to_resolve(cells[k], ALPHA / len(deciding)) for k in deciding]
        more = (f"about {max(needs)} seeds would resolve it at the observed spread" if all(needs)
                else "no practical number of seeds would resolve it at the observed spread (the effect is near 0)")
        evidence = f"{what}; not resolved in {len(deciding)} of {n} cell(s) after Holm's correction: {listed}; {more}"
    return {"claim": claim, "verdict": v, "evidence": evidence, "cells": deciding}


def _unstable_cells(res: Results, norm: str, cells, x=None) -> dict[str, Stability]:
    """Of (name, dataset, arch, optimizer) cells, those whose arms differ in stability (at x)."""
    out = {}
    for name, d, a, o in cells:
        st = stability(res, d, a, norm, o, x)
        if st is not None and st.differs:
            out[name] = st
    return out


def _all_cells(res: Results, pairs=None, opts=None):
    return [(_cell_name(d, a, o), d, a, o) for d, a in (pairs or res.all_pairs())
            for o in (opts or res.present_all("optimizer"))]


def claim_improves(res: Results, norm: str) -> dict:
    """The answer itself: the norm raises test accuracy at the last epoch, for every optimizer."""
    cells = {_cell_name(d, a, o): final_effect(res, d, a, norm, o, "diff") for d, a in res.all_pairs()
             for o in res.present_all("optimizer")}
    return _claim(f"{norm} norm improves test accuracy for every optimizer", cells,
                  f"test-accuracy difference with − without, at the {last_point(res)}, in points",
                  f"no runs with and without {norm} norm", " pts", _unstable_cells(res, norm, _all_cells(res)))


def claim_stable(res: Results, norm: str) -> dict:
    """Where training is hard, a norm is said to make it work at all: over every seed pair (the same
    seed with and without the norm, in every cell), runs that did not train (kbn.core.stability) without
    the norm but did with it, against the reverse; exact McNemar test (no Holm: one test)."""
    claim = f"{norm} norm makes training stable where it is not without it"
    b = c = both = pairs = 0
    phrases, n_none, n_norm = [], 0, 0
    for _, d, a, o in _all_cells(res):
        st = stability(res, d, a, norm, o)
        if st is None or not st.none or not st.norm or not st.paired:
            continue
        down_x, down_y = set(st.down("none")), set(st.down("norm"))
        pairs += len(st.none)
        n_none, n_norm = n_none + len(down_x), n_norm + len(down_y)
        b, c, both = b + len(down_x - down_y), c + len(down_y - down_x), both + len(down_x & down_y)
        phrases += st.arms()
    if not pairs:
        return {"claim": claim, "verdict": "not testable", "evidence": f"no seed pairs with and without {norm} norm",
                "cells": []}
    counts = (f"runs that did not train (diverged, collapsed or never learned): without the norm {n_none} of "
              f"{pairs}, with it {n_norm} of {pairs}")
    if not b and not c:
        verdict = "not testable" if not both else "inconclusive"
        why = "every run trained in both arms" if not both else f"{both} seed pair(s) failed in both arms alike"
        return {"claim": claim, "verdict": verdict, "evidence": f"{counts}: {why}", "cells": []}
    p = mcnemar(b, c)
    verdict = "inconclusive" if p > ALPHA else "supported" if b > c else "contradicted"
    evidence = (f"{counts}; seed pairs where only the run without the norm failed: {b}, only the one with it: {c} "
                f"(exact McNemar test, p = {p:.3g}): " + "; ".join(phrases))
    return {"claim": claim, "verdict": verdict, "evidence": evidence, "cells": []}


def claim_faster(res: Results, norm: str) -> dict:
    """Thesis hypothesis 1: faster convergence, measured as the gain in area under the validation
    curve (paired by seed); the speed-ups to none's final accuracy are given beside it."""
    cells, speed, never = {}, [], 0
    for d, a in res.all_pairs():
        for o in res.present_all("optimizer"):
            c = convergence(res, d, a, norm, o, curve_split(res, d, a))
            if c is not None:
                cells[_cell_name(d, a, o)] = c["auc_diff"]
                speed += [c["speedup"]] if c["speedup"] else []
                never += c["speedup"] is None
    f = _claim(f"{norm} norm speeds up convergence for every optimizer", cells,
               "gain in the area under the validation curve (mean accuracy over the evaluations), in points",
               f"no runs with and without {norm} norm", " pts", _unstable_cells(res, norm, _all_cells(res)))
    if speed:
        f["evidence"] += (f". {units(res).capitalize()} to get {100 * SUMMARY_RUNG:g} % of the way from chance to none's best "
                          f"validation accuracy, none ÷ {norm} (geometric mean over seeds): {min(speed):.1f}× to "
                          f"{max(speed):.1f}× (median {np.median(speed):.1f}×)"
                          + (f"; not reached with the norm in {never} cell(s)" if never else ""))
    return f


def claim_early(res: Results, norm: str) -> dict:
    """rel is larger at the first reported epoch than at the last, cell by cell."""
    cells = {}
    for d, a in res.pairs():
        sp = curve_split(res, d, a)
        eps = res.epochs(d, a, sp)
        for o in res.present("optimizer"):
            if len(eps) > 1:
                first, last = (norm_effect(res, d, a, norm, o, sp, e) for e in (eps[0], eps[-1]))
                cells[_cell_name(d, a, o)] = contrast(last, first, res.interval)
    return _claim(f"{norm} norm helps most in the first epochs", cells,
                  "rel at the first reported epoch minus rel at the last", f"needs several epochs with and without "
                  f"{norm} norm", aside=_unstable_cells(res, norm, _all_cells(res, res.pairs(), res.present("optimizer"))))


def claim_sophisticated(res: Results, norm: str) -> dict:
    """Thesis hypothesis 2: per network, the mean test rel of the plain methods (SGD, SGDm: the
    registry's family "plain") exceeds that of the adaptive ones (seed by seed where the seeds match)."""
    cells = {}
    opts = res.present("optimizer")
    plain_names = "/".join(optimizer_name(o) for o in opts if registry.family(o) == "plain") or "SGD/SGDm"
    dropped = _unstable_cells(res, norm, _all_cells(res, res.pairs(), opts))
    for d, a in res.pairs():
        # an optimizer whose arms differ in stability would bring a stability effect into its family's mean
        kept = [o for o in opts if _cell_name(d, a, o) not in dropped]
        plain = pool([final_effect(res, d, a, norm, o) for o in kept if registry.family(o) == "plain"])
        adaptive = pool([final_effect(res, d, a, norm, o) for o in kept if registry.family(o) == "adaptive"])
        cells[_cell_name(d, a)] = contrast(adaptive, plain, res.interval)
    f = _claim(f"the more sophisticated the optimizer, the less {norm} norm helps", cells,
               f"test rel at the last epoch, {plain_names} mean minus adaptive methods' mean",
               "needs SGD or SGDm and an adaptive optimizer, with and without the norm")
    if dropped:
        f["evidence"] += ("; left out of the means, the optimizers whose arms differ in stability: "
                          + "; ".join(", ".join(st.arms()) for st in dropped.values()))
    return f


def claim_deep(res: Results, norm: str) -> dict:
    """Thesis hypothesis 3: test rel is larger on the deep network than on its shallow counterpart."""
    pairs = set(res.pairs())
    cells, aside = {}, {}
    for d, a in sorted(pairs):
        if a not in DEEP or (d, DEEP[a]) not in pairs:
            continue
        for o in res.present("optimizer"):
            name = f"{optimizer_name(o)}, {display_name(d)} {arch_name(a)} → {arch_name(DEEP[a])}"
            cells[name] = contrast(final_effect(res, d, a, norm, o), final_effect(res, d, DEEP[a], norm, o), res.interval)
            for net in (a, DEEP[a]):
                st = stability(res, d, net, norm, o)
                if st is not None and st.differs:
                    aside[name] = st
    return _claim(f"{norm} norm helps more on deep networks", cells, "deep minus shallow test rel at the last epoch",
                  "no deep and shallow runs of the same dataset and optimizer", aside=aside)


def claim_deep_needs(res: Results, norm: str) -> dict:
    """SPEC's conclusion "deep nets always need BN": it raises their test accuracy for every optimizer."""
    deep = [(d, a) for d, a in res.pairs() if a in DEEP.values()]
    cells = {_cell_name(d, a, o): final_effect(res, d, a, norm, o, "diff") for d, a in deep
             for o in res.present("optimizer")}
    return _claim(f"deep networks always need {norm} norm", cells,
                  "test-accuracy difference with − without on deep networks, in points", "no deep runs", " pts",
                  _unstable_cells(res, norm, _all_cells(res, deep, res.present("optimizer"))))


def claim_chance(res: Results, norm: str) -> dict:
    """Without the norm, deep networks trained by SGD, SGDm or Adadelta start near chance: the
    first reported accuracy is below CHANCE percent."""
    cells = {}
    for d, a in res.pairs():
        eps = res.epochs(d, a, curve_split(res, d, a)) if a in DEEP.values() else []
        for o in ("sgd", "sgdm", "adadelta"):
            v = res.acc_by_seed(d, a, "none", o, curve_split(res, d, a), eps[0]) if eps else None
            near = CHANCE * 10 / (registry.classes(d) or 10)  # 1.5 x chance, whatever the class count
            if v:
                cells[_cell_name(d, a, o)] = one_sample({s: near - 100 * x for s, x in v.items()}, res.interval)
    return _claim("deep networks without norm stay near chance (~10%) with SGD, SGDm, Adadelta early on", cells,
                  f"{CHANCE:.0f}% minus the accuracy at the first reported epoch, in points",
                  "no deep runs without norm", " pts")


def claim_adam_jumps(res: Results, norm: str) -> dict | None:
    """Adam + norm's accuracy changes more from epoch to epoch than Adam's alone (mean |change| per
    seed over all epochs, paired by seed)."""
    cells = {}
    for d, a in res.pairs():
        sp = curve_split(res, d, a)
        jumps = []
        for n in ("none", norm):
            _, curves, _ = res.curves(d, a, n, "adam", sp)
            per = {s: float(np.mean(np.abs(np.diff([100 * c[x] for x in sorted(c)])))) for s, c in curves.items()
                   if len(c) > 1}
            jumps.append(one_sample(per, res.interval) if per else None)
        cells[_cell_name(d, a)] = contrast(*jumps, res.interval)
    f = _claim(f"Adam + {norm} norm jumps from epoch to epoch more than Adam alone", cells,
               "mean |change| of accuracy between epochs with the norm minus without, in points", "", " pts")
    return None if f["verdict"] == "not testable" else f


def claim_poster(res: Results, norm: str) -> dict | None:
    """The poster: at the first evaluation of its table, batch and layer norm are both ahead of none
    (paired by seed, Holm over the two); how close they are to each other is shown beside it."""
    steps = res.by_step[res.by_step["split"] == "test"]
    if not len(steps) or not {"none", "batch", "layer"} <= set(steps["norm"]):
        return None
    # the poster's first column: its regular grid's first step (not a dense early evaluation's)
    _, every = poster_steps(sorted(int(x) for x in steps["step"].unique()))
    at = min(int(x) for x in steps["step"].unique() if int(x) % every == 0)
    first = steps[steps["step"] == at]
    acc = {n: dict(zip(g["seed"].astype(int), g["accuracy"])) for n, g in first.groupby("norm")}
    cells = {f"{n} − none": compare(acc["none"], acc[n], "diff", res.interval) for n in ("batch", "layer")}
    f = _claim("BN and LN converge about equally fast, both faster than no normalization (poster)", cells,
               f"test accuracy at step {at} (the first of the poster table's every-{every}-steps columns), with "
               "the norm minus none, in points",
               "", " pts")
    means = {n: 100 * float(np.mean(list(v.values()))) for n, v in acc.items()}
    gap = compare(acc["layer"], acc["batch"], "diff", res.interval)
    f["evidence"] += (f". Test accuracy at step {at}: batch {means['batch']:.1f}%, layer "
                      f"{means['layer']:.1f}%, none {means['none']:.1f}%; batch − layer {signed(gap)} pts")
    return f


CLAIMS = (claim_improves, claim_stable, claim_faster, claim_early, claim_sophisticated, claim_deep, claim_deep_needs, claim_chance,
          claim_adam_jumps, claim_poster)


def findings(df: pd.DataFrame, norm: str = "batch", interval: str = "t") -> list[dict]:
    """SPEC.md's Study 1 conclusions (and the poster's), each checked against the data: a list of
    {claim, verdict, evidence, cells}, verdict one of supported | contradicted | inconclusive |
    point estimate only (one seed) | not testable; cells: the cells that decide it."""
    res = Results(df, interval=interval)
    return [f for claim in CLAIMS if (f := claim(res, norm)) is not None]
