"""Pictures of a sweep (PNG): learning curves per optimizer with and without each norm (the poster's
Figures 1-4 style), learning-rate sensitivity from the tuner trials, a heat map of rel, the
Adam + BN epoch-to-epoch jumps (the thesis's Figure 7), and the pre-activation percentiles of the
last hidden layer over training with and without each norm (Ioffe & Szegedy 2015, Fig. 1b-c).
It draws what the results, the run folders and the trials hold (seed means at most): it must not
compute the reports' effects or intervals (kbn.report's, kbn.tuning's), train, or write anything but
its pictures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
import pandas as pd

from kbn import registry, tuning
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


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _not_trained(runs: pd.DataFrame) -> dict[tuple, dict]:
    """(dataset, arch, norm, optimizer) -> {seed: Outcome} of the runs that did not train
    (kbn.stability's rule, as the report reads it off the same curves)."""
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
    """Accuracy and loss per epoch (or step), one panel per optimizer, a colour per norm (`colors`;
    by default `norm_colors` of these runs); solid = validation, dashed = training; seed means. A seed
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
        for metric, train_col, val_col in (("accuracy", "accuracy", "val_accuracy"), ("loss", "loss", "val_loss")):
            fig, axes = _grid(len(opts))
            for ax, opt in zip(axes, opts):
                for norm in _norms(g["norm"]):
                    arm = g[(g["optimizer"] == opt) & (g["norm"] == norm)]
                    sel = arm.groupby(x)[[train_col, val_col]].mean()
                    if sel.empty:
                        continue
                    c = colors[norm]
                    bad = unstable.get((d, a, norm, opt), {})
                    name = registry.display("norm", norm)
                    note = f", {len(bad)} of {arm['seed'].nunique()} seeds did not train" if bad else ""
                    ax.plot(sel.index, sel[val_col], color=c, label=f"{name} (validation{note})")
                    ax.plot(sel.index, sel[train_col], color=c, ls="--", alpha=0.7, label=f"{name} (train)")
                    for seed, o in sorted(bad.items()):
                        one = arm[arm["seed"] == seed].sort_values(x)
                        ax.plot(one[x], one[val_col], color=c, ls=":", lw=0.9,
                                label=f"{name} seed {seed} ({o.kind}, validation)")
                ax.set_title(optimizer_name(opt))
                ax.set_xlabel(x)
                ax.set_ylabel(metric)
                _x_axis(ax, g[x].dropna())
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=7)
            fig.suptitle(f"{display_name(d, a)}: {metric} per {x}, with and without normalization{at}")
            paths.append(_save(fig, out / f"curves_{metric}_{d}_{a}{tag}.png"))
    return paths


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

    from kbn.runlog import PREACT_FILE, read_preactivations

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
        return [_save(preactivation_figure(g, colors, lr), out / f"preactivations_{d}_{a}_{o}_lr{lr:g}.png")
                for (d, a, o, lr), g in table.groupby(["dataset", "arch", "optimizer", "lr"])]
    return [_save(preactivation_figure(g, colors), out / f"preactivations_{d}_{a}_{o}.png")
            for (d, a, o), g in table.groupby(["dataset", "arch", "optimizer"])]


def lr_sensitivity(points: pd.DataFrame, out: Path, colors: dict | None = None) -> list[Path]:
    """Selection score against learning rate: coarse (o) and fine (s) trials, diverged ones (x)."""
    colors = colors or norm_colors(points["norm"])
    paths = []
    for (d, a), g in points.groupby(["dataset", "arch"]):
        opts = registry.order("optimizer", g["optimizer"])
        fig, axes = _grid(len(opts))
        for ax, opt in zip(axes, opts):
            for norm in _norms(g["norm"]):
                s = g[(g["optimizer"] == opt) & (g["norm"] == norm)].sort_values("lr")
                if s.empty:
                    continue
                c = colors[norm]
                ax.plot(s["lr"], s["score"], color=c, alpha=0.5, label=registry.display("norm", norm))
                for phase, marker in (("coarse", "o"), ("fine", "s")):
                    p = s[(s["phase"] == phase) & ~s["diverged"]]
                    ax.scatter(p["lr"], p["score"], color=c, marker=marker, s=22)
                dv = s[s["diverged"]]
                ax.scatter(dv["lr"], dv["score"], color="black", marker="x", s=40)
            ax.set_xscale("log")
            ax.set_title(optimizer_name(opt))
            ax.set_xlabel("learning rate")
            ax.set_ylabel("selection score")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, title="o coarse, s fine, x diverged", title_fontsize=7)
        fig.suptitle(f"{display_name(d, a)}: learning-rate sensitivity of the search trials")
        paths.append(_save(fig, out / f"lr_sensitivity_{d}_{a}.png"))
    return paths


def expected_best(points: pd.DataFrame, out: Path, colors: dict | None = None) -> list[Path]:
    """Tuning robustness per (dataset, network): expected best validation score after k trials drawn
    from the coarse grid, one panel per optimizer, a line per norm (kbn.tuning)."""
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
                ax.plot(ks, [r[f"best_k{k}"] for k in ks], marker="o", color=colors[r["norm"]],
                        label=f"{registry.display('norm', r['norm'])} (band {r['band']:.2f} dec)")
            ax.set_title(optimizer_name(opt))
            ax.set_xlabel("trials drawn from the coarse grid (k)")
            ax.set_ylabel("expected best selection score")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{display_name(d, a)}: expected best after k random learning rates (Dodge et al. 2019)")
        paths.append(_save(fig, out / f"expected_best_{d}_{a}.png"))
    return paths


def rel_heatmap(df: pd.DataFrame, out: Path, rate: float | None = None) -> list[Path]:
    """rel on the test set at the last epoch: optimizer x (network, norm); `rate`: the shared rate of
    a sweep over several whose runs `df` holds (named in the title and file)."""
    res = Results(df)
    opts = res.present("optimizer")
    cols = [(d, a, n) for d, a in res.pairs() for n in _norms(res.present("norm")) if n != "none"]
    if not opts or not cols:
        return []
    m = np.full((len(opts), len(cols)), np.nan)
    dagger = np.zeros(m.shape, bool)  # runs behind the number did not train: the report's †
    for i, opt in enumerate(opts):
        for j, (d, a, n) in enumerate(cols):
            e = res.final_epoch(d, a, n, opt, "test")
            r = norm_effect(res, d, a, n, opt, "test", e) if e else None
            if r:
                m[i, j], dagger[i, j] = r.value, bool(r.unstable)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(cols), 1 + 0.5 * len(opts)))
    lim = np.nanmax(np.abs(m)) if np.isfinite(m).any() else 1
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(opts)):
        for j in range(len(cols)):
            ax.text(j, i, "—" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}" + ("†" if dagger[i, j] else ""),
                    ha="center", va="center", fontsize=8)
    ax.set_yticks(range(len(opts)), [optimizer_name(o) for o in opts])
    ax.set_xticks(range(len(cols)), [f"{display_name(d, a)}\n{registry.display('norm', n)} norm" for d, a, n in cols],
                  fontsize=8)
    fig.colorbar(im, ax=ax, label="rel (test, last epoch)")
    ax.set_title("Relative improvement from normalization" + ("" if rate is None else f" at lr {rate:g}")
                 + ("\n† some runs behind it did not train (the report's Stability table)" if dagger.any() else ""),
                 fontsize=10 if dagger.any() else None)
    return [_save(fig, out / ("rel_heatmap.png" if rate is None else f"rel_heatmap_lr{rate:g}.png"))]


def adam_jumps(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Train and validation accuracy of every Adam + BN run per epoch (the thesis's Figure 7);
    cluttered datasets first, as in the thesis."""
    g = runs[(runs["optimizer"] == "adam") & (runs["norm"] == "batch") & runs["epoch"].notna()]
    if g.empty:
        return []
    datasets, archs = registry.order("dataset", g["dataset"]), registry.order("arch", g["arch"])
    keys = sorted(set(zip(g["dataset"], g["arch"])), key=lambda k: (not k[0].startswith("cluttered_"),
                                                                   datasets.index(k[0]), archs.index(k[1])))
    fig, axes = _grid(len(keys))
    for ax, (d, a) in zip(axes, keys):
        s = g[(g["dataset"] == d) & (g["arch"] == a)]
        for seed, r in s.groupby("seed"):
            r = r.sort_values("epoch")
            line, = ax.plot(r["epoch"], 100 * r["val_accuracy"], marker="o", ms=3, label=f"seed {seed} validation")
            ax.plot(r["epoch"], 100 * r["accuracy"], ls="--", color=line.get_color(), label=f"seed {seed} train")
        ax.set_title(display_name(d, a))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Adam + batch norm: accuracy from epoch to epoch (thesis Figure 7)")
    return [_save(fig, out / "adam_bn_jumps.png")]


def plot_all(logdir: Path | None, out: Path, df: pd.DataFrame, runs: pd.DataFrame | None) -> list[Path]:
    """Every picture the results allow; `runs` (the run table) is None for published numbers."""
    out.mkdir(parents=True, exist_ok=True)
    points = tuning.trial_points(logdir) if logdir is not None else None
    names = [*df["norm"], *(runs["norm"] if runs is not None else ()), *(points["norm"] if points is not None else ())]
    colors = norm_colors(names)
    paths = []
    if runs is not None and len(runs):
        paths += curves(runs, out, colors)
        paths += adam_jumps(runs, out)
    if logdir is not None:
        paths += preactivations(logdir, out, colors)
        paths += lr_sensitivity(points, out, colors)
        paths += expected_best(points, out, colors)
    if runs is not None and several_rates(runs):
        paths += [p for lr, g in df.groupby("lr") for p in rel_heatmap(g, out, float(lr))]
    else:
        paths += rel_heatmap(df, out)
    return paths
