import itertools

import numpy as np
import pandas as pd
import pytest

from kbn.report import tuning


def test_expected_best_equals_brute_force_enumeration():
    scores = [0.1, 0.5, 0.9, 0.7]
    for k in range(1, 5):
        draws = list(itertools.product(scores, repeat=k))
        assert tuning.expected_best(scores, k) == pytest.approx(np.mean([max(d) for d in draws]))
    assert tuning.expected_best([0.1, 0.5, 0.9], 1) == pytest.approx(0.5)
    assert tuning.expected_best([0.1, 0.5, 0.9], 50) == pytest.approx(0.9, abs=1e-8)


def test_band_is_the_span_of_the_rates_within_one_point_of_the_best():
    lrs = [0.001, 0.01, 0.1, 1.0]
    assert tuning.band_decades(lrs, [0.5, 0.88, 0.885, 0.2]) == pytest.approx(1.0)
    assert tuning.band_decades(lrs, [0.5, 0.80, 0.885, 0.2]) == 0.0
    assert tuning.band_decades(lrs, [0.88, 0.88, 0.88, 0.88]) == pytest.approx(3.0)


def points(norm, scores, fine=()):
    recs = [dict(dataset="mnist", arch="mlp", norm=norm, optimizer="sgd", phase="coarse", lr=lr, seed=s,
                 score=v + 0.001 * s, diverged=False) for (lr, v) in scores for s in (5, 6)]
    recs += [dict(dataset="mnist", arch="mlp", norm=norm, optimizer="sgd", phase="fine", lr=lr, seed=5,
                  score=v, diverged=False) for lr, v in fine]
    return recs


def test_robustness_per_cell_and_the_change_a_norm_makes():
    df = pd.DataFrame(points("none", [(0.01, 0.5), (0.1, 0.9), (1.0, 0.1)], fine=[(0.0316, 0.898)])
                      + points("batch", [(0.01, 0.9), (0.1, 0.905), (1.0, 0.9)]))
    rob = tuning.robustness(df).set_index("norm")
    assert rob.loc["none", "band"] == pytest.approx(0.5, abs=0.001)  # 0.0316 .. 0.1
    assert rob.loc["batch", "band"] == pytest.approx(2.0)
    assert rob.loc["none", "search_seeds"] == 2 and rob.loc["none", "coarse_points"] == 3
    assert rob.loc["none", "best_k1"] == pytest.approx(np.mean([0.5055, 0.9055, 0.1055]))  # seeds 5, 6 add 0.005, 0.006
    assert rob.loc["batch", "best_k1"] > rob.loc["none", "best_k1"]
    assert rob.loc["none", "best_k3"] < rob.loc["none", "best"]  # three draws may miss the winner
    assert tuning.band_change(tuning.robustness(df), "batch") == {("mnist", "mlp", "sgd"): pytest.approx(1.5, abs=0.001)}


@pytest.mark.slow
def test_a_sweeps_search_trials_give_robustness_and_its_picture(tiny, tmp_path, capsys):
    from kbn.cli import main
    from kbn.core.config import load_sweep
    from kbn.sweep.runner import run_sweep

    run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)
    pts = tuning.trial_points(tmp_path / "out")
    assert len(pts) == 2 * 5 and set(pts["seed"]) == {2}  # 3 coarse + 2 fine per cell, the search seed
    rob = tuning.robustness(pts)
    assert list(rob["norm"]) == ["batch", "none"] and (rob["band"] >= 0).all()
    for _, r in rob.iterrows():
        coarse = pts[(pts["norm"] == r["norm"]) & (pts["phase"] == "coarse")]["score"]
        assert r["best_k1"] == pytest.approx(coarse.mean()) and r["best_k3"] <= coarse.max()
    assert main(["plot", str(tmp_path / "out"), "--out", str(tmp_path / "pics")]) == 0
    assert (tmp_path / "pics" / "expected_best_mnist_mlp.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "Tuning robustness — MNIST + MLP" in text and "E[best] k=3" in text
    change = rob.set_index("norm").loc["batch", "band"] - rob.set_index("norm").loc["none", "band"]
    assert f"Δband (decades) {change:+.2f}" in text  # the summary carries the norm's change of the band
    assert main(["report", str(tmp_path / "out"), "--format", "csv"]) == 0
    tidy = capsys.readouterr().out
    assert "tuning,mnist,mlp,sgd,batch,,,band_decades," in tidy  # a seed column sits before quantity


def test_the_summary_defines_delta_band_where_it_prints_it():
    """Δband is a column of the summary: its notes (text) and its caption's notes (LaTeX) say what it is."""
    from kbn import report

    from test_report import synthetic

    df = pd.DataFrame(points("none", [(0.01, 0.5), (0.1, 0.9), (1.0, 0.1)])
                      + points("batch", [(0.01, 0.9), (0.1, 0.905), (1.0, 0.9)]))
    summary = report.build_tables(synthetic(archs=("mlp",)), extra=tuning.summary_extra(tuning.robustness(df)))[0]
    text = report.render([summary], "text", width=200)
    assert "Δband (decades) +2.00" in text
    note = next(line for line in text.splitlines() if line.lstrip().startswith("Δband"))
    assert "decades" in note and "within 1 point of the best" in note and "minus" in note
    tex = report.render([summary], "latex")
    assert "$\\Delta$band (decades): " in tex.split("\\end{tabularx}")[1]  # in the notes under the table
