"""kbn.bench: the speed measurements behind kbn's backend and packing choices (README, "Backends and
speed")."""

import pytest


@pytest.mark.slow
def test_bench_measures_fit_fast_and_packed():
    """One real (tiny) measurement per variant, through the same child process the CLI uses."""
    from kbn import bench

    results = bench.run(["mlp"], ["batch"], [2], ["jax"], {"default": 512}, epochs=1, log=lambda *_: None,
                        seed_ks=[2])
    assert [(r["variant"], r["k"]) for r in results] == [("fit", 1), ("fast", 1), ("packed", 2), ("seeds", 2)]
    assert all("error" not in r and r["s_per_trial_epoch"] > 0 and r["peak_mb"] > 100 for r in results)
    headers, rows = bench.table(results)
    assert headers[7] == "x fit (same backend)" and rows[0][7] == "1.00"
