"""Pictures of a sweep (PNG): learning curves per optimizer with and without each norm (the poster's
Figures 1-4 style), learning-rate sensitivity from the tuner trials, a heat map of rel, the
Adam + BN epoch-to-epoch jumps (the thesis's Figure 7), and the pre-activation percentiles of the
last hidden layer over training with and without each norm (Ioffe & Szegedy 2015, Fig. 1b-c).
It draws what the results, the run folders and the trials hold (seed means at most): it must not
compute the reports' effects or intervals (kbn.report's, kbn.report.tuning's), train, or write anything but
its pictures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
import pandas as pd

from kbn.core import registry
from kbn.core.stats import t_interval, verdict
from kbn.report import tuning
from kbn.report.labels import display_name, optimizer_name
from kbn.report.measures import norm_effect
from kbn.report.results import Results


def norm_colors(names) -> dict[str, str]:
    """Each norm's colour: the registry's for kbn's own; a user's norms, in name order, take the
    colours after kbn's. `plot_all` makes it once from all its data, so a norm keeps its colour across
    the pictures of one report."""
    user = sorted({n for n in names if n not in registry.NORMS})
    return {n: registry.NORMS[n].color if n in registry.NORMS else f"C{5 + user.index(n) % 5}" for n in set(names)}


def _norms(names) -> list[str]:
    return registry.order("norm", set(names))


def _grid(n: int):
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.2 * cols, 7), 3.2 * rows), squeeze=False, sharex=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


DPI = 110


def _save(fig, path: Path, caption: str, bottom: float = 0.0) -> Path:
    """The PNG, its caption (what is drawn, over how many seeds, what its band is) in the file's
    Description: the LaTeX report's figure captions read it back (`caption`). `bottom`: the share of
    the height kept free below the panels (a figure legend's)."""
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=DPI, metadata={"Description": caption})
    plt.close(fig)
    return path


def caption(path: Path) -> str:
    """A picture's caption, as `_save` wrote it ('' for a PNG written otherwise)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.text.get("Description", "")


def _not_trained(runs: pd.DataFrame) -> dict[tuple, dict]:
    """(dataset, arch, norm, optimizer) -> {seed: Outcome} of the runs that did not train
    (kbn.core.stability's rule, as the report reads it off the same curves)."""
    from kbn.report.results import normalise_long

    col, split = ("val_accuracy", "validation") if runs.get("val_accuracy") is not None \
        and runs["val_accuracy"].notna().any() else ("accuracy", "train")
    keep = [c for c in ("dataset", "arch", "norm", "optimizer", "seed", "epoch", "step", "diverged_at") if c in runs]
    res = Results(normalise_long(runs[runs[col].notna()][keep + [col]].rename(columns={col: "accuracy"})
                                 .assign(split=split)))
    out = {}
    for key, _ in runs.groupby(["dataset", "arch", "norm", "optimizer"]):
        bad = {s: o for s, o in res.outcomes(*key).items() if o.unstable}
        if bad:
            out[key] = bad
    return out


def several_rates(runs: pd.DataFrame) -> bool:
    """Whether a seed of a cell ran at several rates (a fixed-rate sweep over a list of shared rates):
    its pictures are then drawn once per rate, a seed mean over rates being no curve of anything."""
    return bool(len(runs)) and "lr" in runs and runs.groupby(["dataset", "arch", "norm", "optimizer", "seed"])["lr"].nunique().max() > 1


def curves(runs: pd.DataFrame, out: Path, colors: dict | None = None, rate: float | None = None) -> list[Path]:
    """Accuracy (%) and loss per epoch (or step), one panel per optimizer, a colour per norm (`colors`;
    by default `norm_colors` of these runs); solid = validation, dashed = training; seed means, the
    validation mean in a band of its Student-t 95% interval over seeds (kbn.core.stats). A seed
    that did not train (diverged, collapsed, never learned) is also drawn alone, thin and dotted, and the
    legend counts such seeds: the mean alone would hide that they fell. Runs at several shared rates:
    a picture per rate (`rate`: the one drawn, named in its title and file)."""
    colors = colors or norm_colors(runs["norm"])
    if rate is None and several_rates(runs):
        return [p for lr, g in runs.groupby("lr") for p in curves(g, out, colors, float(lr))]
    at, tag = ("", "") if rate is None else (f" at lr {rate:g}", f"_lr{rate:g}")
    unstable = _not_trained(runs)
    paths = []
    for (d, a), g in runs.groupby(["dataset", "arch"]):
        x = "epoch" if g["epoch"].notna().any() else "step"
        opts = registry.order("optimizer", g["optimizer"])
        seeds = g.groupby(["optimizer", "norm"])["seed"].nunique()
        for metric, train_col, val_col in (("accuracy", "accuracy", "val_accuracy"), ("loss", "loss", "val_loss")):
            scale = 100 if metric == "accuracy" else 1  # accuracies in %, as every table prints them
            fig, axes = _grid(len(opts))
            for ax, opt in zip(axes, opts):
                for norm in _norms(g["norm"]):
                    arm = g[(g["optimizer"] == opt) & (g["norm"] == norm)]
                    if arm.empty:
                        continue
                    _arm_curves(ax, arm, x, train_col, val_col, scale, colors[norm], norm,
                                unstable.get((d, a, norm, opt), {}))
                ax.set_title(optimizer_name(opt))
                ax.set_xlabel(x)
                ax.set_ylabel("accuracy (%)" if metric == "accuracy" else metric)
                _x_axis(ax, g[x].dropna())
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=7)
            fig.suptitle(f"{display_name(d, a)}: {metric} per {x}, with and without normalization{at}\n"
                         f"lines: mean of {_seeds(seeds)}; band: 95% Student-t interval of the validation mean", fontsize=10)
            paths.append(_save(fig, out / f"curves_{metric}_{d}_{a}{tag}.png",
                               f"{display_name(d, a)}: {metric}{' (%)' * (metric == 'accuracy')} per {x} with and "
                               f"without normalization{at}, a panel per optimizer. Lines: the mean of {_seeds(seeds)} "
                               "(solid validation, dashed training); band: the 95% Student-t interval of the "
                               "validation mean over seeds; dotted: a seed that did not train, alone."))
    return paths


def _seeds(seeds: pd.Series) -> str:
    """'3 seeds' (or '2–3 seeds' where the arms differ) of the arms' seed counts."""
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"{lo if lo == hi else f'{lo}–{hi}'} seed{'s' if hi > 1 else ''}"


def _arm_curves(ax, arm, x, train_col, val_col, scale, c, norm, bad) -> None:
    """One arm on one panel: the validation mean in its t band, the training mean, and every seed
    that did not train alone."""
    name = registry.display("norm", norm)
    by_x = arm.groupby(x)
    sel = by_x[[train_col, val_col]].mean() * scale
    band = [t_interval(v.dropna() * scale) if v.notna().any() else (None,) * 3 for _, v in by_x[val_col]]
    if all(lo is not None for _, lo, _ in band):
        # cut at what the quantity can reach, as the tables cut intervals: an accuracy to [0, 100] %,
        # a loss (cross-entropy) to >= 0
        top = 100.0 if scale == 100 else np.inf
        ax.fill_between(sel.index, [max(lo, 0.0) for _, lo, _ in band], [min(hi, top) for _, _, hi in band],
                        color=c, alpha=0.2, lw=0)
    note = f", {len(bad)} of {arm['seed'].nunique()} seeds did not train" if bad else ""
    ax.plot(sel.index, sel[val_col], color=c, label=f"{name} (validation{note})")
    ax.plot(sel.index, sel[train_col], color=c, ls="--", alpha=0.7, label=f"{name} (train)")
    for seed, o in sorted(bad.items()):
        one = arm[arm["seed"] == seed].sort_values(x)
        ax.plot(one[x], one[val_col] * scale, color=c, ls=":", lw=0.9, label=f"{name} seed {seed} ({o.kind}, validation)")


def _x_axis(ax, xs) -> None:
    """Steps evaluated densely early (eval_steps: log-spaced) on a log axis, where they are spread out;
    epochs and evenly spaced steps on a linear one with whole-number ticks."""
    xs = np.asarray(sorted(set(float(v) for v in xs)))
    if len(xs) > 2 and xs[0] > 0 and xs[-1] / xs[0] >= 50 and np.diff(xs).std() > 0:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def preactivation_table(logdir: Path) -> pd.DataFrame:
    """Every final run's preactivations.csv under `logdir` (search trials left out), with its cell and
    seed and rate: columns dataset, arch, optimizer, norm, seed, lr, axis, x, layer, scope, p15, p50, p85."""
    import json

    from kbn.runs.runlog import PREACT_FILE, read_preactivations

    rows = []
    for path in sorted(Path(logdir).rglob(PREACT_FILE)):
        folder = path.parent
        if "search" in folder.relative_to(logdir).parts or not (folder / "result.json").is_file():
            continue  # search trials, and unfinished runs
        try:
            s = json.loads((folder / "config.json").read_text())["settings"]
        except (OSError, ValueError, KeyError):
            continue
        for r in read_preactivations(folder):
            axis = "step" if "step" in r else "epoch"
            rows.append({**{k: s[k] for k in ("dataset", "arch", "optimizer", "norm", "seed", "lr")}, "axis": axis,
                         "x": r[axis], **{k: r[k] for k in ("layer", "scope", "p15", "p50", "p85")}})
    return pd.DataFrame(rows, columns=["dataset", "arch", "optimizer", "norm", "seed", "lr", "axis", "x", "layer",
                                       "scope", "p15", "p50", "p85"])


def preactivation_figure(g: pd.DataFrame, colors: dict | None = None, rate: float | None = None):
    """One (dataset, network, optimizer): a row per norm, the fixed unit (left) and all units (right)
    of the last hidden layer; the 15th, 50th and 85th percentiles of its pre-activation on the fixed
    validation batch over training, for the lowest seed (one network, as the paper showed), on one y
    scale so the spreads compare across norms; `colors` as in `curves`. Returns the figure."""
    colors = colors or norm_colors(g["norm"])
    seed = int(g["seed"].min())
    g = g[g["seed"] == seed]
    layer = g["layer"].iloc[len(g) - 1]  # rows are written in layer order: the last is the last hidden layer
    g = g[g["layer"] == layer]
    norms = _norms(g["norm"])
    fig, axes = plt.subplots(len(norms), 2, figsize=(9, 2.6 * len(norms)), squeeze=False, sharex=True, sharey=True)
    for row, norm in zip(axes, norms):
        for ax, scope in zip(row, ("unit", "all")):
            s = g[(g["norm"] == norm) & (g["scope"] == scope)].sort_values("x")
            c = colors[norm]
            ax.fill_between(s["x"], s["p15"], s["p85"], color=c, alpha=0.15)
            for q, ls in (("p15", ":"), ("p50", "-"), ("p85", "--")):
                ax.plot(s["x"], s[q], color=c, ls=ls, label=f"{q[1:]}th percentile")
            what = "unit 0" if scope == "unit" else "all units"
            ax.set_title(f"{norm} norm: {what}", fontsize=9)
            ax.set_xlabel(g["axis"].iloc[0])
            ax.grid(alpha=0.3)
            _x_axis(ax, s["x"])
        row[0].set_ylabel("pre-activation")
    axes[0][0].legend(fontsize=7)
    d, a, opt = g["dataset"].iloc[0], g["arch"].iloc[0], g["optimizer"].iloc[0]
    fig.suptitle(f"{display_name(d, a)}, {optimizer_name(opt)}: input to the last hidden nonlinearity ({layer})\n"
                 f"15th, 50th, 85th percentiles on a fixed validation batch, seed {seed}"
                 + ("" if rate is None else f", lr {rate:g}") + " (Ioffe & Szegedy Fig. 1b-c)",
                 fontsize=9)
    return fig


def preactivations(logdir: Path, out: Path, colors: dict | None = None) -> list[Path]:
    """The mechanism picture per (dataset, network, optimizer) of runs that logged pre-activations;
    per shared rate too where a seed ran at several (`several_rates`: the file names the rate)."""
    table = preactivation_table(logdir)
    colors = colors or norm_colors(table["norm"])
    if several_rates(table):
        return [_save(preactivation_figure(g, colors, lr), out / f"preactivations_{d}_{a}_{o}_lr{lr:g}.png",
                      _preactivation_caption(g, lr))
                for (d, a, o, lr), g in table.groupby(["dataset", "arch", "optimizer", "lr"])]
    return [_save(preactivation_figure(g, colors), out / f"preactivations_{d}_{a}_{o}.png", _preactivation_caption(g))
            for (d, a, o), g in table.groupby(["dataset", "arch", "optimizer"])]


def _preactivation_caption(g: pd.DataFrame, rate: float | None = None) -> str:
    d, a, o = g["dataset"].iloc[0], g["arch"].iloc[0], g["optimizer"].iloc[0]
    return (f"{display_name(d, a)}, {optimizer_name(o)}{'' if rate is None else f', lr {rate:g}'}: the 15th, 50th "
            f"and 85th percentiles (band: 15th to 85th) of the last hidden layer's pre-activation on a fixed "
            f"validation batch over training, unit 0 and all units, a row per norm; one network (seed "
            f"{int(g['seed'].min())}), so no band over seeds (Ioffe & Szegedy 2015, Fig. 1b-c).")


def chosen_rates(runs: pd.DataFrame) -> dict[tuple, float]:
    """(dataset, arch, norm, optimizer) -> the learning rate its final runs trained at (the rate the
    search chose); a cell whose runs used several rates (a shared-rate list) has none."""
    if runs is None or "lr" not in runs or not len(runs):
        return {}
    lrs = runs.groupby(["dataset", "arch", "norm", "optimizer"])["lr"].unique()
    return {k: float(v[0]) for k, v in lrs.items() if len(v) == 1}


def lr_sensitivity(points: pd.DataFrame, out: Path, colors: dict | None = None, chosen: dict | None = None) -> list[Path]:
    """Selection score (accuracy, %) against learning rate: every search trial (coarse o, fine s,
    diverged x), a line through the mean over search seeds, and the rate each cell's final runs
    trained at (`chosen`: (dataset, arch, norm, optimizer) -> lr) as a star on a dotted line."""
    from matplotlib.lines import Line2D

    colors = colors or norm_colors(points["norm"])
    chosen = chosen or {}
    paths = []
    for (d, a), g in points.groupby(["dataset", "arch"]):
        opts = registry.order("optimizer", g["optimizer"])
        fig, axes = _grid(len(opts))
        for ax, opt in zip(axes, opts):
            for norm in _norms(g["norm"]):
                s = g[(g["optimizer"] == opt) & (g["norm"] == norm)].sort_values("lr")
                if not s.empty:
                    _rate_trials(ax, s.assign(score=100 * s["score"]), colors[norm], norm, chosen.get((d, a, norm, opt)))
            ax.set_xscale("log")
            ax.set_title(optimizer_name(opt))
            ax.set_xlabel("learning rate")
            ax.set_ylabel("selection score: accuracy (%)")
            ax.grid(alpha=0.3)
        # one legend under the panels: every panel's norms, what each marker is, and the chosen rate
        lines = {h.get_label(): h for ax in fig.axes for h in ax.get_lines()
                 if not h.get_label().startswith(("_", "chosen"))}
        keys = [Line2D([], [], color="grey", marker=m, ls="", label=t) for m, t in
                (("o", "coarse-grid trial"), ("s", "fine-grid trial"))]
        keys += [Line2D([], [], color="black", marker="x", ls="", label="diverged trial (scored as chance)"),
                 Line2D([], [], color="grey", marker="*", ms=10, mec="black", ls=":",
                        label="chosen rate (its final runs'), value beside it")]
        handles = list(lines.values()) + keys
        width, height = fig.get_size_inches()
        fig.set_size_inches(width, height + 0.5)
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=7)
        seeds = int(g.groupby(["optimizer", "norm", "lr"])["seed"].nunique().max())
        fig.suptitle(f"{display_name(d, a)}: learning-rate sensitivity of the search trials\n"
                     f"each point one trial ({seeds} search seed{'s' if seeds > 1 else ''} per rate); "
                     "line: their mean per rate", fontsize=10)
        paths.append(_save(fig, out / f"lr_sensitivity_{d}_{a}.png", bottom=0.55 / (height + 0.5), caption=
                           f"{display_name(d, a)}: selection score (accuracy, %) of every search trial against its "
                           f"learning rate (o coarse grid, s fine grid, x diverged, scored as chance; {seeds} search "
                           f"seed{'s' if seeds > 1 else ''} per rate), a line through the mean per rate, and a star "
                           "at the rate the final runs trained at."))
    return paths


def _rate_trials(ax, s: pd.DataFrame, c, norm, chosen: float | None) -> None:
    """One arm's trials (scores in %), their mean per rate, and its chosen rate."""
    mean = s.groupby("lr")["score"].mean()
    ax.plot(mean.index, mean.values, color=c, alpha=0.6, label=registry.display("norm", norm))
    for phase, marker in (("coarse", "o"), ("fine", "s")):
        p = s[(s["phase"] == phase) & ~s["diverged"]]
        ax.scatter(p["lr"], p["score"], color=c, marker=marker, s=22)
    dv = s[s["diverged"]]
    ax.scatter(dv["lr"], dv["score"], color="black", marker="x", s=40)
    if chosen is not None and any(np.isclose(mean.index, chosen)):
        at = mean.index[np.isclose(mean.index, chosen)][0]
        ax.axvline(at, color=c, ls=":", lw=1)
        ax.plot([at], [mean[at]], marker="*", ms=14, color=c, mec="black", mew=0.6, ls="",
                label=f"chosen rate {at:g} ({registry.display('norm', norm)})")
        ax.annotate(f"{at:g}", (at, mean[at]), xytext=(7, -12), textcoords="offset points", fontsize=7, color="black")


def expected_best(points: pd.DataFrame, out: Path, colors: dict | None = None) -> list[Path]:
    """Tuning robustness per (dataset, network): expected best validation accuracy (%) after k trials
    drawn from the coarse grid, in a band of ± 1 sd of that best (kbn.report.tuning, exact), one panel per
    optimizer, a line per norm."""
    rob = tuning.robustness(points)
    paths = []
    if rob.empty:  # a folder of runs without a sweep's search trials
        return paths
    colors = colors or norm_colors(rob["norm"])
    for (d, a), g in rob.groupby(["dataset", "arch"]):
        opts = registry.order("optimizer", g["optimizer"])
        fig, axes = _grid(len(opts))
        for ax, opt in zip(axes, opts):
            for _, r in g[g["optimizer"] == opt].iterrows():
                ks = list(range(1, int(r["coarse_points"]) + 1))
                best = 100 * np.array([r[f"best_k{k}"] for k in ks])
                sd = 100 * np.array([r[f"sd_k{k}"] for k in ks])
                c = colors[r["norm"]]
                ax.fill_between(ks, best - sd, best + sd, color=c, alpha=0.2, lw=0)
                ax.plot(ks, best, marker="o", color=c,
                        label=f"{registry.display('norm', r['norm'])} (band of good rates {r['band']:.2f} decades)")
            ax.set_title(optimizer_name(opt))
            ax.set_xlabel("trials drawn from the coarse grid (k)")
            ax.set_ylabel("expected best accuracy (%)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{display_name(d, a)}: expected best after k random learning rates (Dodge et al. 2019)\n"
                     "line: the expectation; band: ± 1 sd of the best of k draws", fontsize=10)
        paths.append(_save(fig, out / f"expected_best_{d}_{a}.png",
                           f"{display_name(d, a)}: the expected best accuracy (%) after k learning rates drawn at "
                           "random from the coarse grid (Dodge et al. 2019), exact from the search scores; band: "
                           "± 1 sd of the best of k draws."))
    return paths


# the heat map's hatches: what a cell's 95% interval says
HATCH_HOLDS_0, HATCH_NO_INTERVAL = "///", "xx"


def rel_heatmap(df: pd.DataFrame, out: Path, rate: float | None = None) -> list[Path]:
    """rel on the test set at the last epoch (the report's Table 1): optimizer x (network, norm), each
    cell its value and 95% interval, hatched where the interval holds 0 (inconclusive) or there is
    none (one seed, or split by stability), its text black or white, whichever reads better on it;
    `rate`: the shared rate of a sweep over several whose runs `df` holds (named in the title and file)."""
    from matplotlib.patches import Patch, Rectangle

    res = Results(df)
    opts = res.present("optimizer")
    cols = [(d, a, n) for d, a in res.pairs() for n in _norms(res.present("norm")) if n != "none"]
    if not opts or not cols:
        return []
    stats = {}
    for i, opt in enumerate(opts):
        for j, (d, a, n) in enumerate(cols):
            e = res.final_epoch(d, a, n, opt, "test")
            stats[i, j] = norm_effect(res, d, a, n, opt, "test", e) if e else None
    m = np.full((len(opts), len(cols)), np.nan)
    for (i, j), r in stats.items():
        if r:
            m[i, j] = r.value
    fig, ax = plt.subplots(figsize=(2.6 + 1.8 * len(cols), 1.6 + 0.6 * len(opts)))
    lim = np.nanmax(np.abs(m)) if np.isfinite(m).any() else 1
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    hatches = set()
    for (i, j), r in stats.items():
        if r is None:
            ax.text(j, i, "—", ha="center", va="center", fontsize=8, color="black")
            continue
        hatch = HATCH_NO_INTERVAL if not r.interval else HATCH_HOLDS_0 if verdict(r) == "inconclusive" else None
        if hatch:
            hatches.add(hatch)
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch=hatch, lw=0, ec=(0.5, 0.5, 0.5, 0.6)))
        text = f"{r.value:+.2f}" + ("†" if r.unstable else "") + (f"\n[{r.low:+.2f}, {r.high:+.2f}]" if r.interval else "")
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=readable_on(im.to_rgba(r.value)))
    ax.set_yticks(range(len(opts)), [optimizer_name(o) for o in opts])
    ax.set_xticks(range(len(cols)), [f"{display_name(d, a)}\n{registry.display('norm', n)} norm" for d, a, n in cols],
                  fontsize=8)
    fig.colorbar(im, ax=ax, label="rel (test, last epoch)")
    keys = {HATCH_HOLDS_0: "95% interval holds 0 (inconclusive)",
            HATCH_NO_INTERVAL: "no interval (one seed, or seed pairs split by stability)"}
    ax.legend(handles=[Patch(facecolor="white", edgecolor="grey", hatch=h, label=keys[h]) for h in sorted(hatches)]
              or [Patch(facecolor="white", edgecolor="grey", label="every 95% interval clear of 0")],
              fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    dagger = any(r is not None and r.unstable for r in stats.values())
    n = sorted({r.n for r in stats.values() if r is not None})
    ax.set_title("Relative improvement from normalization" + ("" if rate is None else f" at lr {rate:g}")
                 + f"\nmean over {'–'.join(map(str, (n[0], n[-1]) if len(n) > 1 else n))} seed(s) [95% interval]"
                 + ("\n† some runs behind it did not train (the report's Stability table)" if dagger else ""),
                 fontsize=9)
    seeds = "–".join(map(str, (n[0], n[-1]) if len(n) > 1 else n))
    return [_save(fig, out / ("rel_heatmap.png" if rate is None else f"rel_heatmap_lr{rate:g}.png"),
                  "rel of adding each norm (test accuracy at the last epoch; Table 1's numbers), per optimizer and "
                  f"network{'' if rate is None else f' at lr {rate:g}'}: the mean over {seeds} seeds with its 95% "
                  "interval" + "".join(f"; hatched {h}: {keys[h]}" for h in sorted(hatches))
                  + ("; † some runs behind it did not train" if dagger else "") + ".")]


def _luminance(rgb) -> float:
    """WCAG 2 relative luminance of a colour."""
    c = np.asarray(matplotlib.colors.to_rgb(rgb))
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(c @ [0.2126, 0.7152, 0.0722])


def readable_on(background) -> str:
    """Black or white text, whichever has the higher WCAG contrast ratio on `background` (one of
    them always reaches 4.5:1, the WCAG AA level for text)."""
    lum = _luminance(background)
    return "black" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "white"


def adam_jumps(runs: pd.DataFrame, out: Path, colors: dict | None = None) -> list[Path]:
    """Validation accuracy (%) of every Adam run with and without batch norm per epoch (the thesis's
    Figure 7, and the arm its finding compares against): a line per seed, each arm's mean |change|
    between epochs in the legend; cluttered datasets first, as in the thesis."""
    g = runs[(runs["optimizer"] == "adam") & runs["norm"].isin(["none", "batch"]) & runs["epoch"].notna()]
    if g[g["norm"] == "batch"].empty:
        return []
    colors = colors or norm_colors(g["norm"])
    col = "val_accuracy" if g["val_accuracy"].notna().any() else "accuracy"  # the finding's split
    datasets, archs = registry.order("dataset", g["dataset"]), registry.order("arch", g["arch"])
    keys = sorted(set(zip(g["dataset"], g["arch"])), key=lambda k: (not k[0].startswith("cluttered_"),
                                                                   datasets.index(k[0]), archs.index(k[1])))
    fig, axes = _grid(len(keys))
    for ax, (d, a) in zip(axes, keys):
        for norm in ("none", "batch"):
            s = g[(g["dataset"] == d) & (g["arch"] == a) & (g["norm"] == norm)]
            if not s.empty:
                _seed_lines(ax, s, col, colors[norm], registry.display("norm", norm))
        ax.set_title(display_name(d, a))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{'validation' if col == 'val_accuracy' else 'training'} accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Adam with and without batch norm: accuracy from epoch to epoch (thesis Figure 7)\n"
                 "a line per seed; mean |change|: between consecutive epochs, over seeds", fontsize=10)
    seeds = g.groupby(["dataset", "arch", "norm"])["seed"].nunique()
    return [_save(fig, out / "adam_bn_jumps.png",
                  f"Adam with and without batch norm: {'validation' if col == 'val_accuracy' else 'training'} "
                  f"accuracy (%) per epoch, a line per seed ({_seeds(seeds)} per arm; every seed drawn, "
                  "no band), each arm's mean |change| between consecutive epochs in the legend (the thesis's "
                  "Figure 7, and the arm its finding compares against).")]


def _seed_lines(ax, s: pd.DataFrame, col: str, c, name: str) -> None:
    """Every seed of one arm, one colour, a line style per seed; the arm's mean |change| labels the first."""
    curves = {seed: r.sort_values("epoch") for seed, r in s.groupby("seed")}
    jumps = [np.abs(np.diff(100 * r[col].to_numpy())).mean() for r in curves.values() if len(r) > 1]
    styles = ["-", "--", ":", "-."]
    for i, (seed, r) in enumerate(curves.items()):
        label = f"{name}, seed {seed}" + (f" (mean |change| {np.mean(jumps):.2f} pts)" if i == 0 and jumps else "")
        ax.plot(r["epoch"], 100 * r[col], color=c, ls=styles[i % 4], marker="o", ms=3, label=label)


def plot_all(logdir: Path | None, out: Path, df: pd.DataFrame, runs: pd.DataFrame | None) -> list[Path]:
    """Every picture the results allow; `runs` (the run table) is None for published numbers."""
    out.mkdir(parents=True, exist_ok=True)
    points = tuning.trial_points(logdir) if logdir is not None else None
    names = [*df["norm"], *(runs["norm"] if runs is not None else ()), *(points["norm"] if points is not None else ())]
    colors = norm_colors(names)
    paths = []
    if runs is not None and len(runs):
        paths += curves(runs, out, colors)
        paths += adam_jumps(runs, out, colors)
    if logdir is not None:
        paths += preactivations(logdir, out, colors)
        paths += lr_sensitivity(points, out, colors, chosen_rates(runs))
        paths += expected_best(points, out, colors)
    if runs is not None and several_rates(runs):
        paths += [p for lr, g in df.groupby("lr") for p in rel_heatmap(g, out, float(lr))]
    else:
        paths += rel_heatmap(df, out)
    return paths
