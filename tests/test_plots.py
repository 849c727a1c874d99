"""kbn.plots: each picture drawn from known numbers; what is checked is what was drawn (the lines'
data, colours, styles and the axes' labels), caught as the figure is saved."""

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from kbn import plots, registry
from kbn.report.labels import optimizer_name


@pytest.fixture
def drawn(monkeypatch):
    """The figures kbn.plots saves, by file name (each is still written)."""
    figures = {}
    save = plots._save

    def keep(fig, path):
        figures[path.name] = fig
        return save(fig, path)

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
    assert (sgd.get_xlabel(), sgd.get_ylabel()) == ("epoch", "accuracy")
    batch = registry.display("norm", "batch")
    lines = lines_by_label(adam)
    val, train = lines[f"{batch} (validation)"], lines[f"{batch} (train)"]
    np.testing.assert_allclose(val.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(val.get_ydata(), [0.7 + e / 100 + 0.0005 - 0.05 for e in (1, 2, 3)])  # seed mean
    np.testing.assert_allclose(train.get_ydata(), [0.7 + e / 100 + 0.0005 for e in (1, 2, 3)])
    assert val.get_linestyle() == "-" and train.get_linestyle() == "--"
    assert mcolors.same_color(val.get_color(), registry.NORMS["batch"].color)
    assert len(lines) == 4  # none and batch, validation and train
    loss = lines_by_label(drawn["curves_loss_mnist_mlp.png"].axes[0])[f"{batch} (validation)"]
    np.testing.assert_allclose(loss.get_ydata(), [2 / e + 0.5 for e in (1, 2, 3)])


def test_lr_sensitivity_draws_score_against_rate_with_diverged_trials_marked(tmp_path, drawn):
    points = pd.DataFrame([
        {"dataset": "mnist", "arch": "mlp", "norm": "none", "optimizer": "sgd", "phase": ph, "lr": lr, "seed": 2,
         "score": score, "diverged": dv}
        for ph, lr, score, dv in [("coarse", 1.0, 0.1, True), ("coarse", 0.01, 0.6, False),
                                  ("coarse", 0.1, 0.9, False), ("fine", 0.0316, 0.8, False)]])
    plots.lr_sensitivity(points, tmp_path)
    ax = drawn["lr_sensitivity_mnist_mlp.png"].axes[0]
    assert ax.get_xscale() == "log" and (ax.get_xlabel(), ax.get_ylabel()) == ("learning rate", "selection score")
    line = lines_by_label(ax)[registry.display("norm", "none")]
    np.testing.assert_allclose(line.get_xdata(), [0.01, 0.0316, 0.1, 1.0])  # in rate order
    np.testing.assert_allclose(line.get_ydata(), [0.6, 0.8, 0.9, 0.1])
    coarse, fine, diverged = (c.get_offsets() for c in ax.collections)
    np.testing.assert_allclose(coarse, [[0.01, 0.6], [0.1, 0.9]])
    np.testing.assert_allclose(fine, [[0.0316, 0.8]])
    np.testing.assert_allclose(diverged, [[1.0, 0.1]])
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
    np.testing.assert_allclose(alone.get_ydata(), [0.5 + e / 100 + 0.001 - 0.05 for e in (1, 2)] + [0.1])
    assert alone.get_linestyle() == ":"
    assert not any("did not train" in label for label in lines_by_label(drawn["curves_accuracy_mnist_mlp.png"].axes[1]))
