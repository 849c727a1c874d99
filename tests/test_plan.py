"""kbn.sweep.plan: what a sweep has left to do, derived from trial scores alone (no training), and `kbn
status`, which reads it from a sweep folder."""

import pytest

from kbn.core.config import Cell, load_sweep, sweep_from_dict
from kbn.core.errors import ConfigError
from kbn.sweep.plan import cell_progress, planned_trials
from kbn.sweep.status import status_rows
from kbn.sweep.runner import run_sweep


def test_fine_grid_sits_between_the_winner_and_its_neighbours():
    s = sweep_from_dict({"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"],
                         "epochs": 1, "search": {"coarse": [0.001, 0.01, 0.1, 1.0], "fine_per_side": 2}})
    assert s.fine_grid("sgd", 0.01) == (0.00215, 0.00464, 0.0215, 0.0464)
    assert s.fine_grid("sgd", 1.0) == (0.215, 0.464, 2.15, 4.64)  # past the edge, same spacing
    assert planned_trials(s) == 4 + 4 + 1


def test_cell_progress_derives_the_plan_from_scores():
    s = sweep_from_dict({"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"],
                         "epochs": 1, "seeds": [0, 1], "search": {"coarse": [0.01, 0.1, 1.0], "fine_per_side": 1}})
    cell = Cell("mnist", "mlp", "none", "sgd")
    k = cell.key
    p = cell_progress(s, cell, {})
    assert [(t["phase"], t["lr"]) for t in p["todo"]] == [("coarse", 0.01), ("coarse", 0.1), ("coarse", 1.0)]
    assert s.search_seeds == (2,)  # by default one seed after the final runs' seeds
    scores = {(k, "coarse", 0.01, 2): 0.5, (k, "coarse", 0.1, 2): 0.9, (k, "coarse", 1.0, 2): 0.9}
    p = cell_progress(s, cell, scores)
    assert p["coarse_best"] == 0.1  # a tie goes to the earlier grid value
    assert [(t["phase"], t["lr"]) for t in p["todo"]] == [("fine", 0.0316), ("fine", 0.316)]
    scores.update({(k, "fine", 0.0316, 2): 0.95, (k, "fine", 0.316, 2): float("-inf")})
    p = cell_progress(s, cell, scores)
    assert p["chosen"] == 0.0316
    assert [(t["phase"], t["lr"], t["seed"]) for t in p["todo"]] == [("final", 0.0316, 0), ("final", 0.0316, 1)]


def test_a_huge_fine_grid_is_refused_and_repeated_values_count_once():
    base = {"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"], "epochs": 1}
    with pytest.raises(ConfigError, match=r"search.fine_per_side: got 100000; give an integer from 0 to 20"):
        sweep_from_dict({**base, "search": {"fine_per_side": 100000}})
    s = sweep_from_dict({**base, "search": {"coarse": [0.1, 0.101, 1.0], "fine_per_side": 5}})
    grid = s.fine_grid("sgd", 0.1)
    assert len(grid) == len(set(grid)) and not set(grid) & {0.1, 0.101, 1.0}
    assert len(grid) < 10  # values between 0.1 and 0.101 round alike
    assert planned_trials(s) == 3 + 10 + 1  # before the coarse winner is known: the largest fine grid
    key = s.cells()[0].key
    assert planned_trials(s, {key: {"coarse_best": 0.1}}) == 3 + len(grid) + 1  # once it is: the true count


def test_a_search_point_scores_the_mean_over_its_search_seeds():
    s = sweep_from_dict({"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"],
                         "epochs": 1, "seeds": [0, 1], "search": {"coarse": [0.01, 0.1], "fine_per_side": 0,
                                                                 "seeds": [7, 8]}})
    cell = s.cells()[0]
    k = cell.key
    p = cell_progress(s, cell, {})
    assert [(t["lr"], t["seed"]) for t in p["todo"]] == [(0.01, 7), (0.01, 8), (0.1, 7), (0.1, 8)]
    # 0.1 wins on seed 7 alone, 0.01 on the mean
    p = cell_progress(s, cell, {(k, "coarse", 0.01, 7): 0.80, (k, "coarse", 0.01, 8): 0.80,
                                (k, "coarse", 0.1, 7): 0.85, (k, "coarse", 0.1, 8): 0.70})
    assert p["chosen"] == 0.01 and [t["seed"] for t in p["todo"]] == [0, 1]
    assert planned_trials(s) == 2 * 2 + 2


def test_the_eta_weighs_each_trial_by_its_length():
    from kbn.sweep.plan import trial_length, work_left

    s = sweep_from_dict({"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"],
                         "epochs": 5, "seeds": [0, 1], "search": {"coarse": [0.01, 0.1, 1.0], "fine_per_side": 1,
                                                                 "epochs": 1}})
    cell = s.cells()[0]
    assert trial_length(s, "coarse") == 1 and trial_length(s, "final") == 5
    assert work_left(s, {cell.key: cell_progress(s, cell, {})}) == (3 + 2) * 1 + 2 * 5
    k = cell.key
    scores = {(k, ph, lr, 2): 0.9 if lr == 0.1 else 0.5 for ph, lr in [
        ("coarse", 0.01), ("coarse", 0.1), ("coarse", 1.0), ("fine", 0.0316), ("fine", 0.316)]}
    assert work_left(s, {k: cell_progress(s, cell, scores)}) == 2 * 5  # only the final runs: 10 of 15 left
    steps = sweep_from_dict({"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"],
                             "epochs": 60, "eval_every_steps": 5000, "total_steps": 50000,
                             "search": {"total_steps": 10000}})
    assert (trial_length(steps, "coarse"), trial_length(steps, "final")) == (10000, 50000)


@pytest.mark.slow
def test_status_names_an_unreadable_trial_file(tiny, tmp_path, capsys):
    from kbn.cli import main

    run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)
    (tmp_path / "out" / "tuner" / "trial_0002" / "trial.json").write_text("{")
    assert main(["status", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "tuner/trial_0002/trial.json is unreadable" in out
    rows = {r[0]: r for r in status_rows(tmp_path / "out", live=False)}
    assert rows["mnist-mlp-none-sgd"][2] == "2/3" and rows["mnist-mlp-none-sgd"][1] != "done"


def _edge_sweep(selection, seeds=(3,)):
    return sweep_from_dict({"datasets": ["mnist"], "archs": ["deep_mlp"], "norms": ["none"], "optimizers": ["sgd"],
                            "epochs": 50, "seeds": [0, 1, 2],
                            "search": {"coarse": [0.001, 0.01, 0.1, 1.0], "fine_per_side": 1, "epochs": 10,
                                       "seeds": list(seeds), "selection": selection}})


def test_the_stable_rule_passes_over_a_rate_whose_larger_neighbour_fell_over():
    """The issue's deep-MLP cells: the best search score sits one grid step below a rate that scored
    chance; "best" picks it, "stable" steps back from the edge. The coarse grid is read without the
    neighbour rule (a decade below the edge is not yet at it): the fine grid then finds the edge."""
    from kbn.sweep.plan import choose, unstable_rates

    for selection, chosen in (("best", 0.316), ("stable", 0.1)):
        s = _edge_sweep(selection)
        cell = s.cells()[0]
        k = cell.key
        scores = {(k, "coarse", 0.001, 3): 0.6, (k, "coarse", 0.01, 3): 0.85, (k, "coarse", 0.1, 3): 0.887,
                  (k, "coarse", 1.0, 3): 0.1}
        outcomes = {(k, "coarse", 1.0, 3): "collapsed"}
        p = cell_progress(s, cell, scores, outcomes=outcomes)
        assert p["coarse_best"] == 0.1
        assert s.fine_grid("sgd", 0.1) == (0.0316, 0.316)
        scores.update({(k, "fine", 0.0316, 3): 0.87, (k, "fine", 0.316, 3): 0.9})
        p = cell_progress(s, cell, scores, outcomes=outcomes)
        assert p["chosen"] == chosen, selection
        assert [t["lr"] for t in p["todo"]] == [chosen] * 3
    assert p["passed_over"] == [(0.316, "its larger neighbour 1 is unstable")]
    # a coarse winner that is itself unstable is passed over at once
    p = cell_progress(s, cell, scores, outcomes={**outcomes, (k, "coarse", 0.1, 3): "collapsed"})
    assert p["coarse_best"] == 0.01
    # what counts as unstable: a divergence or collapse anywhere, chance above a rate that learned
    assert unstable_rates({0.001: ["never learned"], 0.01: ["trained"], 0.1: ["never learned"]}) == {0.1}
    assert unstable_rates({0.01: ["trained", "diverged"], 0.1: ["trained"]}) == {0.01}
    assert choose([(0.01, 0.5), (0.1, 0.9)], {0.01: ["diverged"], 0.1: ["collapsed"]}, "stable") == \
        (0.1, [])  # nothing eligible: the best score, nothing passed over for another


def test_one_unstable_search_seed_makes_a_rate_ineligible_under_the_stable_rule():
    s = _edge_sweep("stable", seeds=(3, 4))
    cell = s.cells()[0]
    k = cell.key
    scores = {(k, ph, lr, sd): v for (ph, lr, v) in (("coarse", 0.001, 0.6), ("coarse", 0.01, 0.8),
                                                       ("coarse", 0.1, 0.9), ("coarse", 1.0, 0.85)) for sd in (3, 4)}
    p = cell_progress(s, cell, scores, outcomes={(k, "coarse", 0.1, 4): "collapsed"})
    assert p["coarse_best"] == 1.0  # 0.1 collapsed under seed 4: out, though it trained under seed 3
    p = cell_progress(s, cell, scores, outcomes={})
    assert p["coarse_best"] == 0.1


def test_a_folder_made_before_the_stable_rule_keeps_its_choice(tmp_path):
    """sweep.json without search.selection was chosen by the best score: read as "best", and a
    sweep file asking for the new default is refused in one line naming the field."""
    import json

    from kbn.sweep.folder import load_folder_sweep, prepare_folder

    s = _edge_sweep("best")
    raw = s.to_file_dict()
    del raw["search"]["selection"]
    (tmp_path / "sweep.json").write_text(json.dumps(raw))
    assert load_folder_sweep(tmp_path).selection == "best"
    with pytest.raises(ConfigError, match=r"search.selection = 'best'.*add selection = 'best' to its \[search\]"):
        prepare_folder(_edge_sweep("stable"), tmp_path)
    prepare_folder(s, tmp_path)  # the same file with selection = "best" resumes
