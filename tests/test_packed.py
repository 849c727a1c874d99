"""Trained packed or one by one, a trial gives the same numbers (within float tolerance)."""

import json

import numpy as np
import pytest

from kbn.config import NORMS, OPTIMIZERS, TrainConfig
from kbn.runlog import read_metrics
from kbn.train import train, train_many

LRS = {"sgd": (0.02, 0.1), "sgdm": (0.01, 0.05), "nesterov": (0.01, 0.05), "adagrad": (0.01, 0.1),
       "adadelta": (0.1, 1.0), "adam": (1e-3, 1e-2), "adamw": (1e-3, 1e-2), "nadam": (1e-3, 1e-2),
       "rmsprop": (1e-3, 1e-2)}
CASES = [("mlp", "batch", opt) for opt in OPTIMIZERS] + [("mlp", norm, "adam") for norm in NORMS if norm != "batch"]
CASES += [("ioffe_mlp", "layer", "sgd")]


def _compare(tmp_path, tiny_dataset, arch, norm, opt, epochs=2, **kw):
    cfgs = [TrainConfig(arch=arch, norm=norm, optimizer=opt, lr=lr, epochs=epochs, batch_size=64, **kw)
            for lr in LRS[opt]]
    packed = train_many(cfgs, tmp_path / "packed", verbose=False, dataset=tiny_dataset)
    for cfg, pr in zip(cfgs, packed):
        single = train(cfg, tmp_path / "single", verbose=False, dataset=tiny_dataset)
        a, b = read_metrics(single.folder), read_metrics(pr.folder)
        assert len(a) == len(b) == (epochs if not kw.get("eval_every_steps") else len(a))
        for ra, rb in zip(a, b):
            for col in ("loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy", "lr"):
                if ra[col] is None:
                    assert rb[col] is None
                else:
                    # einsum vs matmul rounding, amplified a little by adaptive methods over 2 epochs;
                    # a trial with another trial's lr or statistics is off by far more than this
                    assert rb[col] == pytest.approx(ra[col], rel=5e-3, abs=5e-3), (cfg.lr, col, ra, rb)
        assert json.loads((pr.folder / "config.json").read_text())["schedule"]["packed_with"] == 2
    return packed


@pytest.mark.parametrize("arch,norm,opt", CASES, ids=["-".join(c) for c in CASES])
def test_packed_equals_one_by_one(tmp_path, tiny_dataset, arch, norm, opt):
    _compare(tmp_path, tiny_dataset, arch, norm, opt)


def test_packed_cnn_grouped_convolutions(tmp_path, tiny_dataset):
    _compare(tmp_path, tiny_dataset, "cnn", "batch", "sgdm", width=4)


def test_packed_eval_every_steps(tmp_path, tiny_dataset):
    _compare(tmp_path, tiny_dataset, "ioffe_mlp", "batch", "sgd", eval_every_steps=3, total_steps=7)


def test_one_diverging_trial_leaves_the_others_alone(tmp_path, tiny_dataset):
    cfgs = [TrainConfig(optimizer="adam", lr=lr, epochs=2, batch_size=64) for lr in (1e-3, 1e30)]
    ok, blown = train_many(cfgs, tmp_path, verbose=False, dataset=tiny_dataset)
    assert (ok.status, blown.status) == ("finished", "diverged")
    assert blown.metrics["val_accuracy"] == pytest.approx(0.1)
    single = train(cfgs[0], tmp_path / "single", verbose=False, dataset=tiny_dataset)
    assert ok.metrics["val_accuracy"] == pytest.approx(single.metrics["val_accuracy"], abs=1e-6)
    rows = read_metrics(blown.folder)
    assert len(rows) == 1 and np.isnan(rows[0]["loss"])


def test_finished_trials_are_not_packed_again(tmp_path, tiny_dataset):
    cfgs = [TrainConfig(optimizer="sgd", lr=lr, epochs=1, batch_size=64) for lr in (0.01, 0.1, 0.5)]
    first = train(cfgs[1], tmp_path, verbose=False, dataset=tiny_dataset)
    res = train_many(cfgs, tmp_path, verbose=False, dataset=tiny_dataset)
    assert [r.skipped for r in res] == [False, True, False]
    assert res[1].metrics == first.metrics
    cfg = json.loads((res[0].folder / "config.json").read_text())
    assert cfg["schedule"]["packed_with"] == 2


def test_only_learning_rates_may_differ(tmp_path, tiny_dataset):
    with pytest.raises(ValueError, match="norm"):
        train_many([TrainConfig(norm="none"), TrainConfig(norm="batch", lr=0.1)], tmp_path, dataset=tiny_dataset)
    with pytest.raises(ValueError, match="distinct"):
        train_many([TrainConfig(), TrainConfig()], tmp_path, dataset=tiny_dataset)


def test_bench_measures_fit_fast_and_packed():
    """One real (tiny) measurement per variant, through the same child process the CLI uses."""
    from kbn import bench

    results = bench.run(["mlp"], ["batch"], [2], ["jax"], {"default": 512}, epochs=1, log=lambda *_: None)
    assert [(r["variant"], r["k"]) for r in results] == [("fit", 1), ("fast", 1), ("packed", 2)]
    assert all("error" not in r and r["s_per_trial_epoch"] > 0 and r["peak_mb"] > 100 for r in results)
    headers, rows = bench.table(results)
    assert headers[7] == "x fit (same backend)" and rows[0][7] == "1.00"
