"""kbn.core.stability: how a run ended, read off its curve."""

import math

import pytest

from kbn.core.stability import NEAR_CHANCE, Outcome, classify, of_rows, summarize

EPOCHS = list(range(1, 11))


def test_a_run_that_trains_is_trained():
    o = classify(EPOCHS, [0.5, 0.7, 0.8, 0.85, 0.86, 0.87, 0.87, 0.88, 0.88, 0.89], 0.1)
    assert o.kind == "trained" and not o.unstable
    assert (o.best, o.best_at, o.final, o.fell_at) == (0.89, 10, 0.89, None)


def test_a_run_that_learns_then_falls_to_chance_and_stays_collapsed():
    # the SGDm seed: 96 % at epoch 5, then down to chance for good
    o = classify(EPOCHS, [0.6, 0.8, 0.9, 0.95, 0.96, 0.7, 0.2, 0.11, 0.1, 0.106], 0.1)
    assert o.kind == "collapsed" and o.unstable
    # the floor is chance + half of what it learned: 0.1 + 0.5 * 0.86 = 0.53; 0.7 is above it
    assert o.best == 0.96 and o.best_at == 5 and o.fell_at == 7 and o.final == 0.106
    assert o.describe() == "collapsed after epoch 7 (best 96.0 % at epoch 5, 10.6 % at the end)"


def test_a_dip_it_recovers_from_is_not_a_collapse():
    # Adam + BN's epoch-to-epoch jumps: down to chance once, back up after
    o = classify(EPOCHS, [0.6, 0.8, 0.9, 0.12, 0.9, 0.91, 0.2, 0.92, 0.9, 0.91], 0.1)
    assert o.kind == "trained"


def test_a_fall_by_less_than_half_of_what_it_learned_is_not_a_collapse():
    o = classify(EPOCHS, [0.6, 0.8, 0.9, 0.9, 0.9, 0.7, 0.6, 0.6, 0.6, 0.6], 0.1)  # kept 0.5 of 0.8
    assert o.kind == "trained"
    o = classify(EPOCHS, [0.6, 0.8, 0.9, 0.9, 0.9, 0.7, 0.6, 0.6, 0.6, 0.49], 0.1)  # at the last epoch
    assert o.kind == "collapsed" and o.fell_at == 10


def test_a_run_at_chance_throughout_never_learned():
    o = classify(EPOCHS, [0.1, 0.1135, 0.1135, 0.1, 0.1135, 0.14, 0.1, 0.1, 0.1, 0.1135], 0.1)
    assert o.kind == "never learned" and o.unstable
    assert 0.1 + NEAR_CHANCE * 0.9 == pytest.approx(0.145)  # 10 classes: up to 14.5 % is chance
    assert classify(EPOCHS, [0.1] * 9 + [0.15], 0.1).kind == "trained"
    # the threshold follows the class count: 2 classes, chance 50 %
    assert classify([1, 2], [0.51, 0.52], 0.5).kind == "never learned"


def test_a_nan_loss_is_diverged_whatever_came_before():
    o = classify([1, 2, 3], [0.8, 0.9, None], 0.1, diverged=True)
    assert o.kind == "diverged" and o.fell_at == 3 and o.best == 0.9
    assert o.describe() == "diverged at epoch 3"
    assert classify([1], [None], 0.1, diverged=True).kind == "diverged"


def test_missing_evaluations_are_skipped_and_nan_is_not_a_score():
    o = classify([1, 2, 3, 4], [0.5, math.nan, 0.9, None], 0.1)
    assert o.kind == "trained" and o.final == 0.9


def test_from_metrics_rows_reads_validation_and_the_run_axis():
    rows = [{"epoch": 0.12, "step": 100, "accuracy": 0.5, "val_accuracy": 0.4},
            {"epoch": 0.24, "step": 200, "accuracy": 0.9, "val_accuracy": 0.9},
            {"epoch": 0.36, "step": 300, "accuracy": 0.1, "val_accuracy": 0.1}]
    o = of_rows(rows, 0.1, False, "step")
    assert o.kind == "collapsed" and o.fell_at == 300 and o.split == "validation"
    assert o.describe("step") == "collapsed after step 300 (best 90.0 % at step 200, 10.0 % at the end)"


def test_outcome_round_trips_through_its_dict():
    o = classify(EPOCHS, [0.6, 0.8, 0.9, 0.95, 0.96, 0.7, 0.2, 0.11, 0.1, 0.106], 0.1)
    d = o.as_dict()
    assert "rule" in d and Outcome.from_dict(d) == o


def test_summarize_counts_each_kind_and_where_runs_fell():
    c = [classify(EPOCHS, v, 0.1) for v in (
        [0.6, 0.8, 0.9, 0.95, 0.96, 0.7, 0.2, 0.11, 0.1, 0.106],
        [0.6, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
        [0.1] * 10,
        [0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8])]
    assert summarize(c) == "2 of 4 seeds collapsed after epoch 3–7, 1 never learned"
    assert summarize(c[3:]) == ""


# ---------------------------------------------------------------- what the report makes of it

def _cell_df(none_curves, batch_curves, epochs=10):
    import pandas as pd

    from kbn import report

    recs = []
    for norm, curves in (("none", none_curves), ("batch", batch_curves)):
        for seed, curve in enumerate(curves):
            for e, acc in enumerate(curve, 1):
                for split in ("validation", "test"):
                    recs.append(dict(dataset="mnist", arch="deep_mlp", norm=norm, optimizer="sgd", seed=seed, epoch=e,
                                     split=split, accuracy=acc))
    return report.normalise_long(pd.DataFrame(recs))


GOOD = [0.6, 0.8, 0.9, 0.92, 0.93, 0.94, 0.95, 0.95, 0.95, 0.96]
FALLS = [0.6, 0.8, 0.9, 0.92, 0.93, 0.1, 0.1, 0.1, 0.1, 0.1]  # collapsed after epoch 6
CHANCE = [0.1, 0.11, 0.1, 0.1, 0.11, 0.1, 0.1, 0.1, 0.1, 0.1]


def test_a_cell_whose_arms_differ_in_stability_gets_no_accuracy_verdict():
    """The issue's report: `SGDm ? +57.02 [-64.38, +178.42] pts` for 2 collapsed seeds and 1 that
    trained. Now: a mark that the arms differ in stability, no interval (the seed pairs split), and
    the runs that did not train named under the table."""
    from kbn import report
    from kbn.report.measures import stability

    df = _cell_df([FALLS, FALLS, GOOD], [GOOD, GOOD, GOOD])
    res = report.Results(df)
    st = stability(res, "mnist", "deep_mlp", "batch", "sgd")
    assert st.differs and st.split and st.discordant == [0, 1]
    assert st.arms() == ["SGD, MNIST + deep MLP, none: 2 of 3 seeds collapsed after epoch 6"]
    summary = report.build_tables(df)[0]
    cell = summary.rows[0][1]
    assert cell.verdict == "arms differ in stability" and not cell.diff.interval and not cell.rel.interval
    text = report.render([summary], "text")
    assert "⚠ +57.33† pts (no interval: 2 of 3 seed pairs differ in stability)" in text
    assert "did not train: none 2 of 3, batch 0 of 3" in text
    assert "† includes runs that had not trained by that point (kbn.core.stability): SGD, MNIST + deep MLP, none: 2 " \
           "of 3 seeds collapsed after epoch 6" in text
    assert "a t interval over their mean is not honest" in text
    # per epoch: before the collapse the seeds are all trained, after it they are not
    from kbn.report.measures import norm_effect

    early, late = (norm_effect(res, "mnist", "deep_mlp", "batch", "sgd", "validation", e) for e in (5, 6))
    assert early.unstable is None and early.interval
    assert late.unstable and not late.interval


def test_every_seed_failing_without_the_norm_keeps_a_bounded_interval():
    """All three seed pairs differ the same way: one kind of effect, so the t interval stands, cut
    at what accuracies can reach (y - x <= 100 - x)."""
    from kbn import report

    df = _cell_df([FALLS, [0.6, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], CHANCE],
                  [GOOD, GOOD[:-1] + [0.99], GOOD[:-1] + [0.90]])  # +86, +89, +80: t reaches 96.4
    summary = report.build_tables(df)[0]
    cell = summary.rows[0][1]
    assert cell.verdict == "arms differ in stability"
    assert cell.diff.interval and cell.diff.high <= 100 - 10.0 + 1e-9 and cell.diff.bounded
    text = report.render([summary], "text")
    assert "cut at what accuracies can reach" in text
    assert "none: 3 of 3 seeds collapsed after epoch 3–6, 1 never learned" not in text  # counted right:
    assert "none: 3 of 3 seeds collapsed after epoch 3–6" not in text
    assert "none: 2 of 3 seeds collapsed after epoch 3–6, 1 never learned" in text


def test_the_stability_table_and_tidy_rows_name_each_run():
    import io

    import pandas as pd

    from kbn import report

    df = _cell_df([FALLS, GOOD, CHANCE], [GOOD] * 3)
    tables = report.build_tables(df)
    assert [t.id for t in tables[:2]] == ["summary", "stability"]
    stab = tables[1]
    assert stab.rows[0] == ["SGD", "none", "3", "1", "0", "1", "1", "1 of 3 seeds collapsed after epoch 6, 1 never learned"]
    assert stab.rows[1][:4] == ["SGD", "batch", "3", "3"]
    tidy = pd.read_csv(io.StringIO(report.render(tables, "csv")), keep_default_na=False)
    seeds = tidy[(tidy["quantity"] == "outcome_seed") & (tidy["norm"] == "none")]
    assert list(seeds["value"]) == ["collapsed", "trained", "never learned"]
    assert tidy[(tidy["quantity"] == "fell_at_seed")]["value"].astype(float).tolist() == [6.0]
    # a clean sweep says so once, under the summary
    clean = report.build_tables(_cell_df([GOOD] * 3, [GOOD] * 3))
    assert "stability" not in [t.id for t in clean]
    assert any("Every run trained" in n for n in clean[0].notes)


def test_the_stability_finding_and_the_accuracy_claims_set_such_cells_aside():
    from kbn import report

    df = _cell_df([FALLS, FALLS, CHANCE], [GOOD] * 3)
    items = {f["claim"]: f for f in report.findings(df)}
    stable = items["batch norm makes training stable where it is not without it"]
    # 3 discordant pairs all one way: exact McNemar p = 2 * 0.5**3 = 0.25 -- not enough pairs
    assert stable["verdict"] == "inconclusive" and "p = 0.25" in stable["evidence"]
    assert "without the norm 3 of 3, with it 0 of 3" in stable["evidence"]
    improves = items["batch norm improves test accuracy for every optimizer"]
    assert improves["verdict"] == "not testable" and "differ in stability" in improves["evidence"]


def test_mcnemar_keeps_its_level_and_finds_a_real_difference():
    """The exact test by simulation: under no difference (each discordant pair a fair coin) it
    rejects at most 5 % of the time at any number of pairs; with runs that fail 60 % of the time
    without the norm and 5 % with it, 12 pairs are enough most of the time."""
    import numpy as np

    from kbn.core.stats import mcnemar

    rng = np.random.default_rng(0)
    for pairs in (5, 12, 40):
        rejects = 0
        for _ in range(2000):
            fail_x, fail_y = rng.random(pairs) < 0.3, rng.random(pairs) < 0.3
            b, c = int(np.sum(fail_x & ~fail_y)), int(np.sum(fail_y & ~fail_x))
            rejects += mcnemar(b, c) <= 0.05
        assert rejects / 2000 <= 0.05 + 0.01, pairs
    power = np.mean([mcnemar(int(np.sum((x := rng.random(12) < 0.6) & ~(y := rng.random(12) < 0.05))),
                             int(np.sum(y & ~x))) <= 0.05 for _ in range(2000)])
    assert power > 0.6
    assert mcnemar(8, 0) == pytest.approx(2 * 0.5 ** 8) and mcnemar(0, 0) == 1.0


# ---------------------------------------------------------------- a sweep whose runs really collapse

@pytest.mark.slow
def test_a_real_collapse_is_recorded_where_it_happened(collapsing, collapsing_runs):
    out, log = collapsing
    runs = collapsing_runs
    assert len(runs) == 6
    kinds = {k: r["outcome"]["kind"] for k, (r, _) in runs.items()}
    assert sum(kinds[("none", s)] != "trained" for s in range(3)) >= 2, kinds  # this rate is past the edge
    for (norm, seed), (result, rows) in runs.items():
        o = result["outcome"]
        val = [r["val_accuracy"] for r in rows]
        assert o["best"] == max(val) and o["final"] == val[-1]
        if o["kind"] == "collapsed":
            # from fell_at on, every evaluation is below half of what the run had learned
            floor = 0.1 + 0.5 * (o["best"] - 0.1)
            after = [r["val_accuracy"] for r in rows if r["epoch"] >= o["fell_at"]]
            before = [r["val_accuracy"] for r in rows if r["epoch"] == o["fell_at"] - 1]
            assert after and max(after) < floor and before[0] >= floor
            assert f"seed {seed}" in log and f"(collapsed at epoch {o['fell_at']:g})" in log
        elif o["kind"] == "never learned":
            assert max(val) <= 0.145


@pytest.mark.slow
def test_status_and_open_sweep_name_the_runs_that_did_not_train(collapsing, collapsing_runs):
    import collections

    import kbn
    from kbn.sweep.status import status_rows

    out, _ = collapsing
    runs = collapsing_runs
    none = collections.Counter(r["outcome"]["kind"] for (n, _), (r, _) in runs.items() if n == "none")
    rows = {r[0]: r for r in status_rows(out, live=False)}
    want = ", ".join(f"{c} {k}" for k, c in sorted(none.items()) if k != "trained")
    assert rows["fashion_mnist-deep_mlp-none-sgdm"][-1] == want
    f = kbn.open_sweep(out).final_runs
    for row in f.itertuples():
        result, rows_ = runs[(row.cell.split("-")[2], row.seed)]
        assert row.outcome == result["outcome"]["kind"] and row.best_val_accuracy == result["outcome"]["best"]


@pytest.mark.slow
def test_the_report_says_the_arms_differ_in_stability(collapsing, collapsing_runs):
    import io

    import pandas as pd

    from kbn import report

    out, _ = collapsing
    runs = collapsing_runs
    scan = report.scan_runs(out)
    df = report.long_from_runs(scan.runs)
    tables = report.build_tables(df, protocol=scan.protocol)
    text = report.render(tables, "text")
    down = [s for s in range(3) if runs[("none", s)][0]["outcome"]["kind"] != "trained"]
    down_bn = [s for s in range(3) if runs[("batch", s)][0]["outcome"]["kind"] != "trained"]
    assert f"did not train: none {len(down)} of 3, batch {len(down_bn)} of 3" in text
    assert "Stability — Fashion-MNIST + deep MLP" in text
    if set(down) != set(down_bn):
        assert tables[0].rows[0][1].verdict == "arms differ in stability" and "⚠" in text
    tidy = pd.read_csv(io.StringIO(report.render(tables, "csv")), keep_default_na=False)
    got = tidy[(tidy["quantity"] == "outcome_seed")].set_index(["norm", "seed"])["value"].to_dict()
    assert got == {(n, str(s)): r["outcome"]["kind"] for (n, s), (r, _) in runs.items()}
    found = {f["claim"]: f for f in report.findings(df)}
    assert f"without the norm {len(down)} of 3, with it {len(down_bn)} of 3" in \
        found["batch norm makes training stable where it is not without it"]["evidence"]
