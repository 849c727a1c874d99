"""What TensorBoard shows of a sweep as a whole, written from its final runs on disk once a cell's
final runs have finished (and rewritten whole each time: a resumed sweep duplicates no point):

  summary/<norm>/       one TensorBoard run per norm (TensorBoard colours a chart's lines by run, so
                        a norm keeps its colour in every chart): per cell (dataset-arch-optimizer), the
                        seed mean and 95% t-interval of the validation curves (tags cell/<cell>/<metric>/
                        mean|lower|upper) and the seed-mean pre-activation percentiles (cell/<cell>/
                        preactivation/<norm>/...); the first norm's run also holds the Custom Scalars
                        layout that draws them (the norms side by side, a margin chart per metric) and
                        the HParams config (the rates trained, the answer metrics first)
  runs/<run>/events.out.tfevents.*.answer   the run's answer scalars (ANSWER), HParams columns

It reads run folders (kbn.runs.runlog) and uses the interval of kbn.core.stats; it must not
know how a sweep trains or plans."""

from __future__ import annotations

import collections
import fcntl
import shutil
from pathlib import Path

from kbn.runs import runlog, tboard
from kbn.runs.tboard import answer_tags

SUMMARY = "summary"  # its runs are summary/<norm>, from `kbn tensorboard` and a plain --logdir alike
ANSWER_SUFFIX = ".answer"
# in the layout's order; the dashboard draws a section's margin charts last to first: accuracy first
CURVES = (("val_loss", "validation loss"), ("val_accuracy", "validation accuracy"))
TARGET = 0.9  # steps to get this far from chance to the none arm's best (the report's summary rung)


def group_key(s: dict, by_lr: bool = False) -> str:
    """A cell without its norm: the arms that a margin chart puts side by side; `by_lr`, a sweep
    with a list of shared rates: each rate's final runs are their own (…-lr<rate>)."""
    return f"{s['dataset']}-{s['arch']}-{s['optimizer']}" + (f"-lr{float(s['lr']):g}" if by_lr else "")


def final_runs(logdir: Path) -> list[dict]:
    """The finished final runs: settings, result, metrics rows, pre-activation rows, folder."""
    out = []
    for folder in sorted((logdir / "runs").glob("*/")):
        check = runlog.check_run(folder)
        if check.result is None or check.damaged:
            continue
        out.append({"folder": folder, "s": check.config["settings"], "result": check.result,
                    "classes": (check.config.get("data") or {}).get("num_classes") or 10,
                    "rows": runlog.read_metrics(folder), "preact": runlog.read_preactivations(folder)})
    return out


def trained_lrs(logdir: Path) -> list[float]:
    """Every learning rate a run of the sweep trained at (final runs and search trials)."""
    import json

    lrs = set()
    for cfg in list(logdir.glob("runs/*/config.json")) + list(logdir.glob("search/*/*/config.json")):
        try:
            lrs.add(float(json.loads(cfg.read_text())["settings"]["lr"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(lrs)


def arms(runs: list[dict], seeds: list[int] | None, by_lr: bool) -> dict[str, dict[str, dict[int, dict]]]:
    """group -> norm -> seed -> run, keeping only arms whose every seed has finished."""
    out = collections.defaultdict(lambda: collections.defaultdict(dict))
    for r in runs:
        out[group_key(r["s"], by_lr)][r["s"]["norm"]][int(r["s"]["seed"])] = r
    for norms in out.values():
        for norm in [n for n, by in norms.items() if seeds and set(by) < set(seeds)]:
            del norms[norm]
    return {g: dict(n) for g, n in out.items() if n}


def band(values: dict[int, float], metric: str) -> tuple[float, float, float]:
    """(mean, lower, upper) over seeds: the report's Student-t 95% interval; one seed: all three the mean."""
    from kbn.core import stats

    if metric.endswith("accuracy"):  # in percent, cut to [0, 100]: back to the runs' fractions
        st = stats.mean_interval(list(values.values()), list(values))
        st.value, st.low, st.high = (None if v is None else v / 100 for v in (st.value, st.low, st.high))
    else:  # a loss (cross-entropy): cut at 0, as an accuracy is cut at what it can reach
        st = stats.one_sample(values)
        st.low = None if st.low is None else max(st.low, 0.0)
    return (st.value, st.low, st.high) if st.interval else (st.value, st.value, st.value)


def curve_points(by_seed: dict[int, dict], metric: str, axis: str) -> dict[int, tuple[float, float, float]]:
    """step -> (mean, lower, upper) at every step that each seed measured."""
    curves = {s: {int(row[axis]): row[metric] for row in r["rows"] if row.get(metric) is not None}
              for s, r in by_seed.items()}
    common = sorted(set.intersection(*(set(c) for c in curves.values())))
    return {x: band({s: c[x] for s, c in curves.items()}, metric) for x in common}


def preact_points(by_seed: dict[int, dict], axis: str) -> tuple[str | None, dict[int, dict[str, float]]]:
    """The last hidden layer's fixed unit: step -> {p15, p50, p85} as seed means."""
    import numpy as np

    rows = [row for r in by_seed.values() for row in r["preact"] if row["scope"] == "unit"]
    if not rows:
        return None, {}
    layer = rows[-1]["layer"]
    per = collections.defaultdict(lambda: collections.defaultdict(list))
    for row in rows:
        if row["layer"] == layer:
            for q in runlog.PERCENTILES:
                per[int(row[axis])][f"p{q}"].append(row[f"p{q}"])
    n = len(by_seed)
    return layer, {x: {q: float(np.mean(v)) for q, v in qs.items()} for x, qs in sorted(per.items())
                   if all(len(v) == n for v in qs.values())}


def how(n: int) -> str:
    return (f"seed mean, 95% Student-t interval over n = {n} seeds (n - 1 df)" if n > 1 else
            "1 seed: no interval (band = the run itself)")


def stored_sweep(logdir: Path):
    """The folder's sweep (its seeds, norms, HParams config), None when sweep.json cannot be read."""
    from kbn.core.errors import KbnError
    from kbn.sweep.folder import load_folder_sweep

    try:
        return load_folder_sweep(logdir)
    except KbnError:
        return None


def write(logdir) -> Path | None:
    """(Re)write the sweep's summary run and its final runs' answer scalars from the folder; the
    summary run's folder, or None while no final run has finished. One writer at a time: a chief's
    progress thread and the end of its sweep may both write (they shared a temporary folder)."""
    logdir = Path(logdir)
    with open(logdir / f".{SUMMARY}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _write(logdir)


def _write(logdir: Path) -> Path | None:
    runs = final_runs(logdir)
    if not runs:
        return None
    sweep = stored_sweep(logdir)
    axis = "step" if runs[0]["s"].get("eval_every_steps") else "epoch"
    by_lr = sweep is not None and len(sweep.rates) > 1
    for r in runs:
        write_answer(r, runs, axis, by_lr)
    groups = arms(runs, list(sweep.seeds) if sweep else None, by_lr)
    order = list(sweep.norms) if sweep else sorted({r["s"]["norm"] for r in runs}, key=lambda n: (n != "none", n))
    points = collections.defaultdict(lambda: collections.defaultdict(dict))  # norm -> step -> tag -> value
    described, categories = {}, []
    for g, norms in sorted(groups.items()):
        norms = {n: norms[n] for n in order if n in norms}
        categories += _categories(g, norms, axis, points, described)
    if not points:  # no cell has two arms to draw yet (a sweep's first final runs): nothing to write
        return None
    tmp = logdir / f".{SUMMARY}-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for i, norm in enumerate(n for n in order if n in points):
        w = tboard.EventWriter(tmp / norm, axis)
        if i == 0:
            if sweep is not None:
                w.summary(tboard.sweep_experiment(sweep, trained_lrs(logdir)))
            w.summary(tboard.layout_summary(categories))
        for step in sorted(points[norm]):
            w.named(points[norm][step], step, described)
        w.close()
    dest = logdir / SUMMARY
    shutil.rmtree(dest, ignore_errors=True)  # rewritten whole: a resumed sweep adds no second copy of a point
    tmp.rename(dest)
    return dest


def _categories(g: str, norms: dict, axis: str, points: dict, described: dict) -> list:
    """One cell's sections: a margin chart per validation curve (its lines the norms' runs), then
    (when probed) a pre-activation chart per norm; their points go into `points` (norm -> step ->
    tag -> value). Two sections: the dashboard draws a section's line charts before its margin charts."""
    from tensorboard.plugins.custom_scalar import layout_pb2 as lp

    n = min(len(by) for by in norms.values())
    charts = []
    for metric, label in CURVES:
        tags = {k: f"cell/{g}/{metric}/{k}" for k in ("mean", "lower", "upper")}
        for norm, by_seed in norms.items():
            for x, values in curve_points(by_seed, metric, axis).items():
                points[norm][x].update(zip(tags.values(), values))
        for k, t in tags.items():
            described[t] = f"{label.capitalize()} of {g} (run summary/<norm>): the {k} of its {how(n)}. {tboard.AXES[axis]}"
        series = [lp.MarginChartContent.Series(value=tags["mean"], lower=tags["lower"], upper=tags["upper"])]
        charts.append(lp.Chart(title=f"{label}: {' vs '.join(norms)} ({how(n)})", margin=lp.MarginChartContent(series=series)))
    sections = [lp.Category(title=f"{g}: {' vs '.join(norms)}", chart=charts)]
    charts = []
    for norm, by_seed in norms.items():
        layer, pre = preact_points(by_seed, axis)
        if layer is None:
            continue
        prefix = f"cell/{g}/preactivation/{norm}/{layer}_unit{runlog.FIXED_UNIT}"
        for x, qs in pre.items():
            points[norm][x].update({f"{prefix}_{q}": v for q, v in qs.items()})
        for q in runlog.PERCENTILES:
            described[f"{prefix}_p{q}"] = (f"The {q}th percentile of {layer}'s pre-activation (unit "
                                          f"{runlog.FIXED_UNIT}), mean over {len(by_seed)} seed(s). {tboard.AXES[axis]}")
        charts.append(lp.Chart(title=f"{norm}: pre-activation p15/p50/p85 of {layer}, unit {runlog.FIXED_UNIT} "
                               f"(mean of {len(by_seed)} seeds)", multiline=lp.MultilineChartContent(tag=[f"^{prefix}_p"])))
    if charts:
        sections.append(lp.Category(title=f"{g}: pre-activation percentiles, {' vs '.join(norms)}", chart=charts))
    return sections


def write_answer(run: dict, runs: list[dict], axis: str, by_lr: bool) -> None:
    """The run's answer scalars (answer_tags) in its own folder, replacing any earlier ones."""
    for old in run["folder"].glob(f"events.out.tfevents.*{ANSWER_SUFFIX}"):
        old.unlink()
    values = answer_values(run, runs, axis, by_lr)
    if not values:
        return
    w = tboard.EventWriter(run["folder"], axis, suffix=ANSWER_SUFFIX)
    tags = answer_tags(axis)
    w.named(values, int(run["rows"][-1][axis]), {t: f"{tags[t][1]} Written once, at the run's last evaluation. "
                                                   f"{tboard.AXES[axis]}" for t in values})
    w.close()


def answer_values(run: dict, runs: list[dict], axis: str, by_lr: bool) -> dict[str, float]:
    """answer_tags' values for one run: the diff and the target need the none run of its seed."""
    import numpy as np

    s = run["s"]
    val = [(int(r[axis]), r["val_accuracy"]) for r in run["rows"] if r.get("val_accuracy") is not None]
    out = {"answer/val_auc": 100 * float(np.mean([v for _, v in val]))} if val else {}
    none = next((r for r in runs if r["s"]["norm"] == "none" and group_key(r["s"], by_lr) == group_key(s, by_lr)
                 and r["s"]["seed"] == s["seed"]), None)
    if none is None:
        return out
    mine, base = run["result"]["metrics"].get("test_accuracy"), none["result"]["metrics"].get("test_accuracy")
    if mine is not None and base is not None:
        out["answer/test_diff_vs_none"] = 100 * (float(mine) - float(base))
    best = [r["val_accuracy"] for r in none["rows"] if r.get("val_accuracy") is not None]
    if best:
        chance = 1 / run["classes"]
        target = chance + TARGET * (max(best) - chance)
        reached = next((x for x, v in val if v >= target - 1e-9), None)
        if reached is not None:
            out[f"answer/{axis}s_to_target"] = float(reached)
    return out
