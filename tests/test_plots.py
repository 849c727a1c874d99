"""kbn.report.plots: each picture drawn from known numbers; what is checked is what was drawn (the lines'
data, colours, styles and the axes' labels), caught as the figure is saved."""

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from kbn.core import registry
from kbn.report import plots
from kbn.report.labels import optimizer_name


@pytest.fixture
def drawn(monkeypatch):
    """The figures kbn.report.plots saves, by file name (each is still written)."""
    figures = {}
    save = plots._save

    def keep(fig, path, *args, **kwargs):
        figures[path.name] = fig
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def runs_table():
    """Two seeds x 3 epochs per (optimizer, norm); accuracy = base + epoch/100 + seed/1000."""
    rows = []
    for opt, base in (("sgd", 0.5), ("adam", 0.6)):
        for norm, extra in (("none", 0.0), ("batch", 0.1)):
            for seed in (0, 1):
                for epoch in (1, 2, 3):
                    acc = base + extra + epoch / 100 + seed / 1000
                    rows.append({"dataset": "mnist", "arch": "mlp", "optimizer": opt, "norm": norm, "seed": seed,
                                 "epoch": epoch, "step": None, "accuracy": acc, "val_accuracy": acc - 0.05,
                                 "loss": 1 / epoch + seed, "val_loss": 2 / epoch + seed})
    return pd.DataFrame(rows)


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_curves_draw_the_seed_means_per_epoch_a_colour_per_norm(tmp_path, drawn):
    paths = plots.curves(runs_table(), tmp_path)
    assert [p.name for p in paths] == ["curves_accuracy_mnist_mlp.png", "curves_loss_mnist_mlp.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    fig = drawn["curves_accuracy_mnist_mlp.png"]
    sgd, adam = fig.axes[:2]
    assert (sgd.get_title(), adam.get_title()) == (optimizer_name("sgd"), optimizer_name("adam"))
    assert (sgd.get_xlabel(), sgd.get_ylabel()) == ("epoch", "accuracy (%)")
    batch = registry.display("norm", "batch")
    lines = lines_by_label(adam)
    val, train = lines[f"{batch} (validation)"], lines[f"{batch} (train)"]
    np.testing.assert_allclose(val.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(val.get_ydata(), [70 + e + 0.05 - 5 for e in (1, 2, 3)])  # seed mean, in %
    np.testing.assert_allclose(train.get_ydata(), [70 + e + 0.05 for e in (1, 2, 3)])
    assert val.get_linestyle() == "-" and train.get_linestyle() == "--"
    assert mcolors.same_color(val.get_color(), registry.NORMS["batch"].color)
    assert len(lines) == 4  # none and batch, validation and train
    loss = lines_by_label(drawn["curves_loss_mnist_mlp.png"].axes[0])[f"{batch} (validation)"]
    np.testing.assert_allclose(loss.get_ydata(), [2 / e + 0.5 for e in (1, 2, 3)])


def search_points():
    """Four search trials of one cell, one diverged."""
    return pd.DataFrame([
        {"dataset": "mnist", "arch": "mlp", "norm": "none", "optimizer": "sgd", "phase": ph, "lr": lr, "seed": 2,
         "score": score, "diverged": dv}
        for ph, lr, score, dv in [("coarse", 1.0, 0.1, True), ("coarse", 0.01, 0.6, False),
                                  ("coarse", 0.1, 0.9, False), ("fine", 0.0316, 0.8, False)]])


def test_lr_sensitivity_draws_score_against_rate_with_diverged_trials_marked(tmp_path, drawn):
    points = search_points()
    plots.lr_sensitivity(points, tmp_path)
    ax = drawn["lr_sensitivity_mnist_mlp.png"].axes[0]
    assert ax.get_xscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("learning rate", "selection score: accuracy (%)")
    line = lines_by_label(ax)[registry.display("norm", "none")]
    np.testing.assert_allclose(line.get_xdata(), [0.01, 0.0316, 0.1, 1.0])  # in rate order
    np.testing.assert_allclose(line.get_ydata(), [60, 80, 90, 10])  # in %, as the tables
    coarse, fine, diverged = (c.get_offsets() for c in ax.collections)
    np.testing.assert_allclose(coarse, [[0.01, 60], [0.1, 90]])
    np.testing.assert_allclose(fine, [[0.0316, 80]])
    np.testing.assert_allclose(diverged, [[1.0, 10]])
    assert mcolors.same_color(ax.collections[2].get_facecolor()[0], "black")


def test_a_users_norms_take_the_colours_after_kbns_by_name_not_by_history():
    assert plots.norm_colors(["zeta", "batch"]) == {"zeta": "C5", "batch": registry.NORMS["batch"].color}
    both = plots.norm_colors(["zeta", "alpha", "none"])
    assert both == {"alpha": "C5", "zeta": "C6", "none": registry.NORMS["none"].color}
    assert plots.norm_colors(["zeta"]) == {"zeta": "C5"}  # what was drawn before changes nothing


def test_curves_take_the_colours_they_are_given(tmp_path, drawn):
    runs = runs_table().replace({"norm": {"batch": "tests.user_parts:ScaleNorm"}})
    plots.curves(runs, tmp_path, colors={"none": "tab:gray", "tests.user_parts:ScaleNorm": "C7"})
    ax = drawn["curves_accuracy_mnist_mlp.png"].axes[0]
    colors = {line.get_color() for line in ax.get_lines()}
    assert colors == {"tab:gray", "C7"}


def test_curves_show_the_seeds_that_did_not_train(tmp_path, drawn):
    """A seed that collapses is drawn alone (dotted) beside the mean, and the legend counts it."""
    runs = runs_table()
    falls = (runs["optimizer"] == "sgd") & (runs["norm"] == "none") & (runs["seed"] == 1) & (runs["epoch"] == 3)
    runs.loc[falls, "val_accuracy"] = 0.1  # 0.46 at epoch 2, then chance: collapsed
    plots.curves(runs, tmp_path)
    sgd = drawn["curves_accuracy_mnist_mlp.png"].axes[0]
    lines = lines_by_label(sgd)
    none = registry.display("norm", "none")
    assert f"{none} (validation, 1 of 2 seeds did not train)" in lines
    alone = lines[f"{none} seed 1 (collapsed, validation)"]
    np.testing.assert_allclose(alone.get_ydata(), [50 + e + 0.1 - 5 for e in (1, 2)] + [10])
    assert alone.get_linestyle() == ":"
    assert not any("did not train" in label for label in lines_by_label(drawn["curves_accuracy_mnist_mlp.png"].axes[1]))


# ---------------------------------------------------------------- uncertainty, units, contrast


def noisy_runs(seeds=(0, 1, 2)):
    """3 seeds x 3 epochs per (optimizer, norm), with seed noise: batch norm helps SGD by ~10 points
    (its interval clear of 0) and Adam by ~0.1 (its interval holds 0)."""
    rng = np.random.default_rng(7)
    rows = []
    for opt, lr, gain in (("sgd", 0.1, 0.10), ("adam", 0.001, 0.001)):
        for seed in seeds:
            for norm in ("none", "batch"):
                for epoch in (1, 2, 3):
                    acc = 0.6 + epoch / 50 + (gain if norm == "batch" else 0) + rng.normal(0, 0.01)
                    rows.append({"dataset": "mnist", "arch": "mlp", "optimizer": opt, "norm": norm, "seed": seed,
                                 "lr": lr, "epoch": epoch, "step": None, "accuracy": acc + 0.02,
                                 "val_accuracy": acc, "test_accuracy": acc - 0.01 + rng.normal(0, 0.003),
                                 "loss": 1 / epoch + rng.normal(0, 0.05), "val_loss": 1.2 / epoch})
    return pd.DataFrame(rows)


def t_band(values):
    from scipy import stats

    v = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return v.mean() - half, v.mean() + half


def band_edges(collection) -> dict[float, tuple[float, float]]:
    """x -> (lowest, highest) y of a fill_between band's outline."""
    out = {}
    for x, y in collection.get_paths()[0].vertices:
        lo, hi = out.get(round(x, 9), (np.inf, -np.inf))
        out[round(x, 9)] = (min(lo, y), max(hi, y))
    return out


def test_curves_draw_a_95_percent_t_band_around_the_seed_mean_in_percent(tmp_path, drawn):
    runs = noisy_runs()
    plots.curves(runs, tmp_path)
    fig = drawn["curves_accuracy_mnist_mlp.png"]
    sgd = fig.axes[0]
    batch = registry.display("norm", "batch")
    val = next(line for line in sgd.get_lines() if line.get_label().startswith(f"{batch} (validation"))
    arm = runs[(runs["optimizer"] == "sgd") & (runs["norm"] == "batch")]
    means = [100 * arm[arm["epoch"] == e]["val_accuracy"].mean() for e in (1, 2, 3)]
    np.testing.assert_allclose(val.get_ydata(), means)  # accuracy in %, as every table prints it
    assert sgd.get_ylabel() == "accuracy (%)"
    bands = [c for c in sgd.collections if mcolors.same_color(c.get_facecolor()[0][:3], mcolors.to_rgb(val.get_color()))]
    assert len(bands) == 1
    edges = band_edges(bands[0])
    for e in (1, 2, 3):
        np.testing.assert_allclose(edges[e], t_band(100 * arm[arm["epoch"] == e]["val_accuracy"]), rtol=1e-9)
    text = fig._suptitle.get_text() + " ".join(t.get_text() for t in sgd.get_legend().get_texts())
    assert "mean of 3 seeds" in text and "95%" in text  # it says what is drawn
    loss = drawn["curves_loss_mnist_mlp.png"].axes[0]
    assert loss.get_ylabel() == "loss" and any(len(band_edges(c)) == 3 for c in loss.collections)


def test_lr_sensitivity_marks_the_chosen_rate_and_names_every_marker(tmp_path, drawn):
    points = search_points()
    plots.lr_sensitivity(points, tmp_path, chosen={("mnist", "mlp", "none", "sgd"): 0.1})
    ax = drawn["lr_sensitivity_mnist_mlp.png"].axes[0]
    chosen = [line for line in ax.get_lines() if line.get_label().startswith("chosen")]
    assert chosen and chosen[0].get_marker() == "*"
    np.testing.assert_allclose(chosen[0].get_xydata(), [[0.1, 90.0]])  # at the chosen rate, its score in %
    assert any(t.get_text() == "0.1" for t in ax.texts)  # the rate, beside its star
    legend = drawn["lr_sensitivity_mnist_mlp.png"].legends[0]  # one legend, under the panels
    labels = [t.get_text() for t in legend.get_texts()]
    for word in ("coarse", "fine", "diverged", "chosen"):  # in the legend's entries, not only its title
        assert any(word in label for label in labels), (word, labels)
    assert legend.get_title().get_text() == "" and ax.get_legend() is None


def test_chosen_rates_are_the_final_runs_rates():
    runs = noisy_runs()
    assert plots.chosen_rates(runs) == {("mnist", "mlp", n, o): lr for n in ("none", "batch")
                                        for o, lr in (("sgd", 0.1), ("adam", 0.001))}


def test_expected_best_is_in_percent_as_its_table_with_a_band_of_one_sd(tmp_path, drawn):
    from kbn.report import tuning

    points = pd.DataFrame([{"dataset": "mnist", "arch": "mlp", "norm": "none", "optimizer": "sgd", "phase": "coarse",
                            "lr": lr, "seed": 0, "score": s, "diverged": False}
                           for lr, s in ((0.001, 0.3), (0.01, 0.6), (0.1, 0.9), (1.0, 0.1))])
    plots.expected_best(points, tmp_path)
    ax = drawn["expected_best_mnist_mlp.png"].axes[0]
    table = tuning.tables(tuning.robustness(points))[0]
    printed = [float(x) for x in table.rows[0][4:]]  # E[best] k=1..4, in % in the table
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), printed, atol=0.005)
    assert "(%)" in ax.get_ylabel()
    scores = np.array([0.3, 0.6, 0.9, 0.1])
    for k, (lo, hi) in band_edges(ax.collections[0]).items():
        draws = np.array(np.meshgrid(*[scores] * int(k))).reshape(int(k), -1).max(axis=0)  # every draw, enumerated
        np.testing.assert_allclose((lo, hi), 100 * (draws.mean() + np.array([-1, 1]) * draws.std()), atol=1e-9)


def luminance(rgb) -> float:
    c = np.asarray(mcolors.to_rgb(rgb))
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


def contrast(a, b) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_rel_heatmap_shows_intervals_hatches_inconclusive_cells_and_reads(tmp_path, drawn):
    from kbn import report

    df = report.long_from_runs(noisy_runs())
    plots.rel_heatmap(df, tmp_path)
    fig = drawn["rel_heatmap.png"]
    ax = fig.axes[0]
    im = ax.get_images()[0]
    m = im.get_array()
    table1 = next(t for t in report.build_tables(df) if t.id == "table1")
    rows = {r[0]: r[1] for r in table1.rows}  # optimizer name -> its rel Stat
    opts = [t.get_text() for t in ax.get_yticklabels()]
    hatched = {round(p.get_y() + p.get_height() / 2) for p in ax.patches if p.get_hatch()}
    for i, name in enumerate(opts):
        stat = rows[name]
        assert m[i, 0] == pytest.approx(stat.value)  # the value Table 1 prints, in its unit
        cell = next(t for t in ax.texts if t.get_position() == (0, i))
        assert f"[{stat.low:+.2f}, {stat.high:+.2f}]" in cell.get_text()  # its interval, signed as the tables
        assert contrast(cell.get_color(), im.to_rgba(m[i, 0])) >= 4.5  # WCAG AA for text
        assert (i in hatched) == (stat.low <= 0 <= stat.high)  # inconclusive: hatched
    assert hatched == {opts.index(optimizer_name("adam"))}
    assert any("hold 0" in t.get_text() or "holds 0" in t.get_text() for t in ax.get_legend().get_texts())


def test_adam_jumps_draw_the_arm_without_the_norm_it_is_compared_with(tmp_path, drawn):
    runs = noisy_runs()
    plots.adam_jumps(runs, tmp_path)
    ax = drawn["adam_bn_jumps.png"].axes[0]
    by_norm = {}
    for line in ax.get_lines():
        for norm in ("none", "batch"):
            if line.get_label().startswith(registry.display("norm", norm)):
                by_norm.setdefault(norm, []).append(line)
    assert len(by_norm["none"]) == len(by_norm["batch"]) == 3  # every seed of both arms
    arm = runs[(runs["optimizer"] == "adam") & (runs["norm"] == "none") & (runs["seed"] == 0)]
    np.testing.assert_allclose(by_norm["none"][0].get_ydata(), 100 * arm.sort_values("epoch")["val_accuracy"])
    assert all(mcolors.same_color(line.get_color(), registry.NORMS[n].color) for n, ls in by_norm.items() for line in ls)
    assert "mean |change|" in " ".join(t.get_text() for t in ax.get_legend().get_texts())


def test_each_picture_carries_its_caption_what_is_drawn_its_n_and_band(tmp_path):
    from kbn import report

    runs = noisy_runs()
    paths = plots.plot_all(None, tmp_path, report.long_from_runs(runs), runs)
    captions = {p.name: plots.caption(p) for p in paths}
    assert set(captions) == {"curves_accuracy_mnist_mlp.png", "curves_loss_mnist_mlp.png", "adam_bn_jumps.png",
                             "rel_heatmap.png"}
    assert "mean of 3 seeds" in captions["curves_accuracy_mnist_mlp.png"]
    assert "95% Student-t interval" in captions["curves_accuracy_mnist_mlp.png"]
    assert "3 seeds" in captions["rel_heatmap.png"] and "hatched" in captions["rel_heatmap.png"]
    assert "3 seeds per arm" in captions["adam_bn_jumps.png"]


def test_curve_bands_stop_at_what_accuracy_and_loss_can_reach(tmp_path, drawn):
    """Seeds that spread widely near 100 % and near a loss of 0: the t band would run past both."""
    runs = noisy_runs()
    spread = np.where(runs["seed"] == 0, -0.3, 0.15)
    runs["val_accuracy"] = np.clip(0.85 + spread, 0, 1)  # 0.55, 1.0, 1.0: mean 85 %, t band up to ~150 %
    runs["val_loss"] = np.clip(0.1 - spread, 0, None)  # 0.4, 0, 0: t band down to ~-0.4
    plots.curves(runs, tmp_path)
    for name, low, high in (("curves_accuracy_mnist_mlp.png", 0.0, 100.0), ("curves_loss_mnist_mlp.png", 0.0, np.inf)):
        ax = drawn[name].axes[0]
        bands = [band_edges(c) for c in ax.collections if len(band_edges(c)) == 3]
        assert bands, name
        ys = [y for b in bands for edge in b.values() for y in edge]
        assert min(ys) == pytest.approx(low) or min(ys) > low, name
        assert max(ys) <= high, name
    acc = [band_edges(c) for c in drawn["curves_accuracy_mnist_mlp.png"].axes[0].collections]
    assert any(hi == pytest.approx(100.0) for b in acc for _, hi in b.values())  # cut, not dropped
