"""kbn.tools.bench: the speed measurements behind kbn's backend and packing choices (README, "Backends and
speed")."""

import pytest


@pytest.mark.slow
def test_bench_measures_fit_fast_and_packed():
    """One real (tiny) measurement per variant, through the same child process the CLI uses."""
    from kbn.tools import bench

    results = bench.run(["mlp"], ["batch"], [2], ["jax"], {"default": 512}, epochs=1, log=lambda *_: None,
                        seed_ks=[2])
    assert [(r["variant"], r["k"]) for r in results] == [("fit", 1), ("fast", 1), ("packed", 2), ("seeds", 2)]
    assert all("error" not in r and r["s_per_trial_epoch"] > 0 and r["peak_mb"] > 100 for r in results)
    headers, rows = bench.table(results)
    assert headers[7] == "x fit (same backend)" and rows[0][7] == "1.00"


@pytest.mark.slow
def test_bench_compile_share_of_dense_early_evaluations(tmp_path, tiny_text, write_cache, capsys):
    """`kbn bench --compile`: a step-based sweep's runs, each with its eval_steps and with one, in a
    fresh process without a compile cache; one training program whatever the schedule, so the compile
    seconds of the two schedules differ little (the runs' own records, apart from training)."""
    from kbn.cli import main

    write_cache()
    sweep = tmp_path / "steps.toml"
    sweep.write_text(tiny_text.replace('norms = ["none", "batch"]', 'norms = ["batch"]').replace(
        "epochs = 1", 'epochs = 1\neval_every_steps = 40\ntotal_steps = 80\neval_steps = "log:2:30:6"'))
    assert main(["bench", "--compile", str(sweep), "--out", str(tmp_path / "c.md")]) == 0
    out = capsys.readouterr().out
    import json

    results = json.loads((tmp_path / "c.json").read_text())
    assert [(r["schedule"], r["evaluations"]) for r in results] == [("the sweep's", 8), ("one point", 3)]
    assert all("error" not in r and r["step"] == 80 and 0 < r["compile_time"] < r["wall_time"] for r in results)
    assert all(r["train_time"] + r["compile_time"] <= r["wall_time"] for r in results)
    many, one = results
    assert many["compile_time"] < 1.5 * one["compile_time"] + 0.5  # before: a program per period length
    assert "compile share" in out and "wall × one point" in out


def test_compile_table_gives_the_median_of_interleaved_repeats():
    from kbn.tools import bench

    def rec(schedule, n, wall, train, comp, rep):
        return {"cell": "c", "schedule": schedule, "evaluations": n, "repeat": rep, "wall_time": wall,
                "train_time": train, "compile_time": comp}

    results = [rec("the sweep's", 13, w, w - 2, 2.0, i) for i, w in enumerate((30.0, 50.0, 31.0))]
    results += [rec("one point", 1, w, w - 2, 1.5, i) for i, w in enumerate((29.0, 28.0, 60.0))]
    headers, rows = bench.compile_table(results)
    assert headers[3] == "n" and [r[:4] for r in rows] == [["c", "the sweep's", "13", "3"], ["c", "one point", "1", "3"]]
    assert rows[0][4:] == ["31.0", "29.0", "2.0", "6.5%", f"{31 / 29:.3f}"]  # a 50 s outlier moves no median


def test_multiply_adds_of_a_small_conv_and_dense_model_by_hand():
    """Input 8×8×1 → Conv2D(4, 3×3, same) → Flatten → Dense(10): the convolution 8·8 positions × 3·3·1 ×
    4 = 2,304 multiply-adds, the dense 256 × 10 = 2,560; training 6 FLOPs per multiply-add (2 forward,
    4 backward), the first layer 4 (no gradient of the images). kbn's cnn: 627,200 + 5,017,600 + 401,408
    + 2,560, 1.752 TFLOP per 50k epoch."""
    import keras

    from kbn import models
    from kbn.tools import bench

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    assert bench.multiply_adds(model) == 2304 + 2560
    # the first layer needs no gradient of its inputs (the images): 2 of its 6 per multiply-add go
    assert bench.train_flops(model, examples=3) == 3 * (6 * (2304 + 2560) - 2 * 2304)
    cnn = models.build("cnn", (28, 28, 1), 10, "batch")
    assert bench.multiply_adds(cnn) == 28 * 28 * 25 * 32 + 14 * 14 * 25 * 32 * 32 + 1568 * 256 + 2560
    assert bench.train_flops(cnn) == pytest.approx(50_000 * (6 * 6_048_768 - 2 * 627_200), rel=1e-9)  # 1.752e12


def test_bench_rows_say_how_far_from_the_arithmetic_limit():
    from kbn.tools import bench

    peak = bench.peak_flops("float32", n=256, repeats=2)
    assert peak is not None and 1e8 < peak < 1e14  # a real product on this machine
    r = {"backend": "jax", "arch": "cnn", "norm": "none", "variant": "fast", "k": 1, "s_per_trial_epoch": 20.0,
         "peak_mb": 900, "path": "fit", "train_flops": 1.8e12, "peak_flops": 3e11, "peak_flops_bf16": None,
         "loadavg": 2.04}
    headers, rows = bench.table([r])
    got = dict(zip(headers, rows[0]))
    assert got["limit s (fp32)"] == "6.00" and got["× the limit"] == "3.3×" and got["path"] == "fit"
    assert got["peak GFLOP/s fp32 / bf16"] == "300 / —" and got["TFLOP / epoch"] == "1.800" and got["load"] == "2.0"
