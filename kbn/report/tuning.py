"""Tuning robustness, read from a sweep's search trials: how wide is the band of good learning rates,
and how good a result should a researcher expect from k trials of the coarse grid?
It must not train or know the sweep folder's files beyond the trials' scores.

Much of what a norm is said to buy is an easier learning rate. The search trials already hold the
data: every (cell, phase, lr, search seed) with its selection score.

- Band width: the span, in decades, of the learning rates whose search score (mean over the search
  seeds) is within `BAND` (1 accuracy point) of the cell's best; measured on the grid searched (coarse
  and fine), so it is resolved to the grid's spacing.
- Expected best after k trials (Dodge et al. 2019, "Show your work"): draw k learning rates from the
  coarse grid uniformly with replacement and keep the best score; its expectation is exact from order
  statistics, E[max] = sum_i v_(i) ((i/N)^k - ((i-1)/N)^k) for the N sorted scores v_(1) <= ... <= v_(N).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

BAND = 0.01  # one accuracy point, as a fraction
TRIAL_COLUMNS = ["dataset", "arch", "norm", "optimizer", "phase", "lr", "seed", "score", "diverged"]


def trial_points(logdir: Path) -> pd.DataFrame:
    """Every completed search trial of a sweep: cell, phase, lr, search seed, score, diverged."""
    from kbn.sweep.trials import records

    recs = []
    cells = _cells(logdir)
    # rglob: a folder of several sweeps reads as all of their trials (unreadable files add nothing;
    # kbn status names them)
    for tuner in sorted({f.parent.parent for f in Path(logdir).rglob("tuner/trial_*/trial.json")}, key=str):
        for t in records(tuner.parent):
            if t.status != "COMPLETED" or t.phase not in ("coarse", "fine"):
                continue
            cell = cells.get(t.cell)
            d, a, n, o = (cell.dataset, cell.arch, cell.norm, cell.optimizer) if cell else t.cell.split("-")
            recs.append(dict(dataset=d, arch=a, norm=n, optimizer=o, phase=t.phase, lr=t.lr, seed=t.seed,
                             score=float(t.score), diverged=bool(t.metrics.get("diverged", 0.0))))
    return pd.DataFrame.from_records(recs, columns=TRIAL_COLUMNS)


def _cells(logdir: Path) -> dict:
    """Cell key -> cell, from sweep.json (cell keys hold the short names of a user's components)."""
    from kbn.core.errors import KbnError
    from kbn.core.config import cells_by_key
    from kbn.sweep.folder import load_folder_sweep

    try:
        return cells_by_key(load_folder_sweep(logdir))
    except KbnError:
        return {}


def lr_scores(points: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, phase, lr): the mean score over the search seeds, and how many there were."""
    keys = ["dataset", "arch", "norm", "optimizer", "phase", "lr"]
    return points.groupby(keys, as_index=False).agg(score=("score", "mean"), seeds=("seed", "nunique"))


def band_decades(lrs, scores, band: float = BAND) -> float:
    """The span (decades) of the learning rates scoring within `band` of the best."""
    lrs, scores = np.asarray(lrs, float), np.asarray(scores, float)
    good = lrs[scores >= scores.max() - band]
    return float(math.log10(good.max() / good.min()))


def _max_weights(scores, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted scores and P(the best of k draws with replacement is each of them)."""
    v = np.sort(np.asarray(scores, float))
    i = np.arange(1, len(v) + 1)
    return v, (i / len(v)) ** k - ((i - 1) / len(v)) ** k


def expected_best(scores, k: int) -> float:
    """E[max of k draws with replacement] from the empirical scores (exact, by order statistics)."""
    v, w = _max_weights(scores, k)
    return float(np.sum(v * w))


def best_sd(scores, k: int) -> float:
    """The standard deviation of the max of k draws (exact, as `expected_best`): how far one
    researcher's k trials may land from the expectation (Dodge et al.'s shaded band)."""
    v, w = _max_weights(scores, k)
    return float(np.sqrt(max(np.sum(v * v * w) - np.sum(v * w) ** 2, 0.0)))


def robustness(points: pd.DataFrame) -> pd.DataFrame:
    """Per cell and norm: the band width (coarse and fine), the grid sizes, and E[best] for
    k = 1 .. coarse grid size (columns best_k1, best_k2, ...) with its sd (sd_k1, ...)."""
    rows = []
    scores = lr_scores(points)
    for key, g in scores.groupby(["dataset", "arch", "optimizer", "norm"]):
        coarse = g[g["phase"] == "coarse"].sort_values("lr")
        both = g.groupby("lr", as_index=False)["score"].max()  # an lr in both grids: either score
        row = dict(zip(["dataset", "arch", "optimizer", "norm"], key), band=band_decades(both["lr"], both["score"]),
                   points=len(both), coarse_points=len(coarse), best=float(both["score"].max()),
                   search_seeds=int(g["seeds"].max()))
        for k in range(1, len(coarse) + 1):
            row[f"best_k{k}"] = expected_best(coarse["score"], k)
            row[f"sd_k{k}"] = best_sd(coarse["score"], k)
        rows.append(row)
    return pd.DataFrame(rows)


def band_change(rob: pd.DataFrame, norm: str) -> dict[tuple, float]:
    """(dataset, arch, optimizer) -> the norm's band width minus no norm's, in decades."""
    out = {}
    base = {tuple(r[["dataset", "arch", "optimizer"]]): r["band"] for _, r in rob[rob["norm"] == "none"].iterrows()}
    for _, r in rob[rob["norm"] == norm].iterrows():
        key = tuple(r[["dataset", "arch", "optimizer"]])
        if key in base:
            out[key] = float(r["band"] - base[key])
    return out


def tables(rob: pd.DataFrame) -> list:
    """The report's tuning-robustness tables: one per (dataset, network), rows optimizer x norm."""
    from kbn.core import registry
    from kbn.report.labels import display_name
    from kbn.report.tables import Table

    out = []
    for (d, a), g in rob.groupby(["dataset", "arch"]):
        ks = sorted(int(c.removeprefix("best_k")) for c in g.columns if c.startswith("best_k") and g[c].notna().any())
        t = Table("tuning", f"Tuning robustness — {display_name(d, a)}: the band of good learning rates and the expected "
                  "best validation accuracy (%) after k coarse-grid trials",
                  ["optimizer", "norm", "band (decades)", "points"] + [f"E[best] k={k}" for k in ks], [], kind="plain",
                  label=(d, a))
        opts, norms = registry.order("optimizer", g["optimizer"]), registry.order("norm", g["norm"])
        rank = g["optimizer"].map(opts.index) * len(norms) + g["norm"].map(norms.index)
        for _, r in g.assign(_rank=rank).sort_values("_rank").iterrows():  # the thesis's order, as every table
            row = [registry.display("optimizer", r["optimizer"]), r["norm"], f"{r['band']:.2f}", str(r["points"])]
            row += ["—" if pd.isna(r.get(f"best_k{k}")) else f"{100 * r[f'best_k{k}']:.2f}" for k in ks]
            t.rows.append(row)
            base = dict(table="tuning", dataset=d, arch=a, optimizer=r["optimizer"], norm=r["norm"], epoch="")
            t.records += [{**base, "quantity": "band_decades", "value": round(r["band"], 6)}]
            t.records += [{**base, "quantity": f"expected_best_k{k}", "value": round(r[f"best_k{k}"], 6)}
                          for k in ks if not pd.isna(r.get(f"best_k{k}"))]
        search_seeds = int(g["search_seeds"].max())
        t.notes.append(f"band: the span of the learning rates whose search score (mean over {search_seeds} search "
                       f"seed(s)) is within {100 * BAND:.0f} point of the best, on the grid searched (coarse and fine), "
                       "so it is resolved to the grid's spacing. E[best] k: the expected best search score after k "
                       "learning rates drawn at random (with replacement) from the coarse grid, exact from order "
                       "statistics (Dodge et al. 2019). points: the rates searched (coarse and fine).")
        out.append(t)
    return out


def summary_extra(rob: pd.DataFrame) -> list:
    """The summary's per-cell column: the norm's change of the good-learning-rate band, in decades
    (name, fn, what it means: the summary's notes define it)."""
    changes = {norm: band_change(rob, norm) for norm in set(rob["norm"]) - {"none"}}

    def band(d, a, norm, opt):
        return changes.get(norm, {}).get((d, a, opt))

    return [("Δband (decades)", band,
             f"the norm's band of good learning rates minus no norm's, in decades (log10 of the span of the rates "
             f"whose search score is within {100 * BAND:.0f} point of the best; the tuning table's band): above 0, "
             "the norm widens the rates that work")]
