"""kbn.sweep.trials: the one reader of Keras Tuner's trial files, on files written by Keras Tuner itself."""

import json

import keras_tuner as kt
import pytest
from keras_tuner.engine import trial as trial_module

from kbn.sweep import trials


def _write(tuner, tid, *, status="COMPLETED", score=0.75, diverged=0.0, **values):
    hp = kt.HyperParameters()
    for name, v in {"cell": "fashion_mnist-mlp-batch-adam", "phase": "coarse", "lr": 0.01, "seed": 0, **values}.items():
        hp.Fixed(name, v)
    t = trial_module.Trial(hyperparameters=hp, trial_id=tid, status=status)
    t.metrics.register("score", "max")
    t.metrics.register("diverged", "min")
    if score is not None:
        t.metrics.update("score", score)
        t.metrics.update("diverged", diverged)
        t.score = score
    path = tuner / f"trial_{tid}" / "trial.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(t.get_state()))
    return path


def test_a_keras_tuner_trial_reads_back_whole(tmp_path):
    path = _write(tmp_path / "tuner", "0003", score=0.8125, diverged=1.0, lr=0.316, seed=2, phase="final")
    t = trials.read_trial(path)
    assert (t.trial_id, t.cell, t.phase, t.lr, t.seed) == ("0003", "fashion_mnist-mlp-batch-adam", "final", 0.316, 2)
    assert (t.status, t.score, t.message) == ("COMPLETED", 0.8125, None)
    assert t.metrics == {"score": 0.8125, "diverged": 1.0}


def test_scan_is_in_id_order_and_names_what_it_cannot_read(tmp_path):
    tuner = tmp_path / "tuner"
    _write(tuner, "0002")
    _write(tuner, "0000", status="RUNNING", score=None)
    _write(tuner, "0001").write_text('{"hyperparameters": {"values": {"cell": "c", "phase": "coarse", "lr": "0.1"')
    bad_score = _write(tuner, "0003")
    bad_score.write_text(bad_score.read_text().replace('"score": 0.75', '"score": "0.75"'))
    no_status = _write(tuner, "0004")
    state = json.loads(no_status.read_text())
    del state["status"]
    no_status.write_text(json.dumps(state))
    _write(tuner, "0005", lr="0.1")
    seen = list(trials.scan(tmp_path))
    assert [s.trial_id for s in seen] == ["0000", "0001", "0002", "0003", "0004", "0005"]
    kinds = {s.trial_id: (type(s).__name__, getattr(s, "why", None)) for s in seen}
    assert kinds == {"0000": ("TrialRecord", None), "0001": ("Unreadable", "JSONDecodeError"),
                     "0002": ("TrialRecord", None), "0003": ("Unreadable", "score '0.75' is not a number"),
                     "0004": ("Unreadable", "KeyError"), "0005": ("Unreadable", "lr '0.1' is not a number")}
    running = seen[0]
    assert running.status == "RUNNING" and running.score is None and running.metrics == {}
    assert [t.trial_id for t in trials.records(tmp_path)] == ["0000", "0002"]


@pytest.mark.parametrize("metrics", [None, {}, {"metrics": {"score": {"observations": []}}},
                                     {"metrics": {"score": "x"}}, {"metrics": []}])
def test_a_mangled_metrics_block_reads_as_no_metrics(tmp_path, metrics):
    path = _write(tmp_path / "tuner", "0000")
    state = json.loads(path.read_text())
    state["metrics"] = metrics
    path.write_text(json.dumps(state))
    assert trials.read_trial(path).metrics == {}
