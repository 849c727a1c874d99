"""kbn.open_sweep: a sweep folder read as Python objects, and Keras Tuner's own calls on kbn's project."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kbn
from kbn.core.config import load_sweep
from kbn.core.errors import ConfigError, KbnError
from kbn.sweep.status import folder_progress, status_rows

ROOT = Path(__file__).resolve().parents[1]
TRIAL_COLUMNS = ["trial_id", "cell", "dataset", "arch", "norm", "optimizer", "phase", "lr", "seed", "status", "score",
                 "outcome"]
FINAL_COLUMNS = ["cell", "dataset", "arch", "norm", "optimizer", "seed", "lr", "folder", "status", "test_accuracy",
                 "val_accuracy", "outcome", "best_val_accuracy", "fell_at", "model"]


@pytest.mark.slow
def test_open_sweep_answers_per_cell_and_final_runs_keep_their_models(tiny, tmp_path):
    from kbn.sweep.runner import run_sweep
    from kbn.sweep.tuner import SweepTuner

    out = tmp_path / "out"
    sweep = load_sweep(tiny)
    assert run_sweep(sweep, out, log=lambda *_: None) == 0
    s = kbn.open_sweep(out)
    assert s.config.name == "tiny" and s.config.cells() == sweep.cells()
    # chosen: one learning rate per cell, what the search chose
    assert s.chosen() == {k: p["chosen"] for k, p in folder_progress(out).progress.items()}
    assert set(s.chosen()) == {c.key for c in sweep.cells()} and None not in s.chosen().values()
    # trials: every trial, one row each
    t = s.trials
    assert list(t.columns) == TRIAL_COLUMNS and len(t) == 14
    assert set(t.status) == {"COMPLETED"} and t.phase.value_counts().to_dict() == {"coarse": 6, "fine": 4, "final": 4}
    assert set(t.norm) == {"none", "batch"} and set(t.dataset) == {"mnist"}
    for cell, lr in s.chosen().items():
        search = t[(t.cell == cell) & (t.phase != "final")]
        assert search.sort_values("trial_id").loc[search.score.idxmax(), "lr"] == lr  # ties: the earlier
        assert set(t[(t.cell == cell) & (t.phase == "final")].lr) == {lr}
    # final runs: the runs in runs/, each with its trained network; search trials keep none
    f = s.final_runs
    assert list(f.columns) == FINAL_COLUMNS and len(f) == 4
    assert set(f.status) == {"finished"} and sorted(f.seed) == [0, 0, 1, 1]
    assert all(Path(p).parent == out / "runs" / Path(p).parent.name for p in f.model)
    assert not list((out / "search").rglob("model.keras"))
    import keras

    from kbn import data

    ds = data.load("mnist")
    for row in f.itertuples():
        model = keras.saving.load_model(row.model)
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        got = model.evaluate(ds.x_test, ds.y_test, verbose=0, return_dict=True)["accuracy"]
        assert got == pytest.approx(row.test_accuracy, abs=1e-6), row
    # status: what `kbn status` prints, in numbers (the CLI formats them)
    st = s.status()
    rows = status_rows(out, live=False)
    assert st.cell.tolist() == [r[0] for r in rows]
    for rec, row in zip(st.itertuples(), rows):
        assert f"{rec.coarse_done}/{rec.coarse_planned}" == row[2] and f"{rec.final_done}/{rec.final_planned}" == row[4]
        assert isinstance(rec.chosen_lr, float) and f"{rec.chosen_lr:.2e}" == row[5]
        assert 0 <= rec.final_mean_score <= 1 and f"{100 * rec.final_mean_score:.2f}" == row[6]
        assert rec.final_unstable == 0 and (rec.dataset, rec.arch) == ("mnist", "mlp")
    mine = f[f.seed == 0].set_index("cell")
    assert st.set_index("cell").chosen_lr.to_dict() == mine.lr.to_dict() == s.chosen()
    # with and without a norm side by side, in one line (README, Python API)
    wide = f.pivot_table(index=["dataset", "arch", "optimizer"], columns="norm", values="test_accuracy")
    assert list(wide.columns) == ["batch", "none"] and len(wide) == 1
    # Keras Tuner's own calls on kbn's tuner
    tuner = SweepTuner(sweep, out, log=lambda *_: None)
    with pytest.raises(KbnError) as e:
        tuner.get_best_models()
    msg = str(e.value)
    assert "runs/" in msg and "model.keras" in msg and f"kbn.open_sweep('{out}').final_runs" in msg
    best = tuner.get_best_hyperparameters(1)[0].values  # as documented: the top score of all trials
    assert best["lr"] == t.loc[t.score.idxmax(), "lr"] and t.score.max() == max(t[t.cell == best["cell"]].score)
    # reading needs neither Keras nor Keras Tuner
    code = ("import sys, kbn; s = kbn.open_sweep(sys.argv[1]); s.trials; s.final_runs; s.chosen(); s.status();"
            "print(sorted(m for m in ('keras', 'keras_tuner', 'tensorflow', 'jax') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr[-2000:]


@pytest.mark.slow
def test_stock_grid_search_on_a_kbn_project_does_what_the_readme_says(tiny, tmp_path):
    """README, Keras Tuner interop: stock GridSearch reloads kbn's trials, ranks them all together
    (by its own default objective unless given one) and finds no models."""
    import keras
    import keras_tuner as kt

    from kbn.sweep.runner import run_sweep

    out = tmp_path / "out"
    run_sweep(load_sweep(tiny), out, log=lambda *_: None)
    scores = kbn.open_sweep(out).trials.set_index("trial_id").score

    def build(hp):
        return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])

    stock = kt.GridSearch(hypermodel=build, directory=str(out), project_name="tuner", overwrite=False)
    assert len(stock.oracle.trials) == 14
    lowest = stock.oracle.get_best_trials(1)[0]  # no objective given: "default_objective", minimised
    assert lowest.score == scores.min()
    with pytest.raises(FileNotFoundError, match="checkpoint.weights.h5"):
        stock.get_best_models(1)
    ranked = kt.GridSearch(hypermodel=build, directory=str(out), project_name="tuner", overwrite=False,
                           objective=kt.Objective("score", "max"))
    assert ranked.oracle.get_best_trials(1)[0].score == scores.max()


def test_open_sweep_on_a_sweep_not_started_and_on_other_folders(tiny, tmp_path):
    from kbn.sweep.folder import prepare_folder

    with pytest.raises(ConfigError, match="no sweep.json"):
        kbn.open_sweep(tmp_path)
    (tmp_path / "new").mkdir()
    prepare_folder(load_sweep(tiny), tmp_path / "new")
    s = kbn.open_sweep(tmp_path / "new")
    assert list(s.trials.columns) == TRIAL_COLUMNS and s.trials.empty
    assert list(s.final_runs.columns) == FINAL_COLUMNS and s.final_runs.empty
    assert s.chosen() == {"mnist-mlp-none-sgd": None, "mnist-mlp-batch-sgd": None}
    assert set(s.status().state) == {"pending"}
    assert "kbn.open_sweep" in repr(s) or str(tmp_path / "new") in repr(s)
    json.loads((tmp_path / "new" / "sweep.json").read_text())  # reading wrote nothing over it



PUBLIC = """
import json, sys, kbn
light = sorted(m for m in ('keras', 'keras_tuner', 'tensorflow', 'jax', 'pandas') if m in sys.modules)
kinds = {name: type(getattr(kbn, name)).__name__ for name in kbn.__all__}
print(json.dumps({"light": light, "dir": sorted(dir(kbn)), "kinds": kinds}))
"""


def test_every_public_name_resolves_and_import_kbn_stays_light():
    """`import kbn` imports neither Keras nor pandas; each name in kbn.__all__ is there when asked for,
    and the README's Python API names every one."""
    import json

    r = subprocess.run([sys.executable, "-c", PUBLIC], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["light"] == [] and got["dir"] == sorted(got["kinds"])
    kinds = got["kinds"]
    assert {kinds[n] for n in ("report", "models", "data")} == {"module"}
    assert {kinds[n] for n in ("train", "train_many", "run_sweep", "open_sweep", "load_sweep")} == {"function"}
    assert kinds["TrainConfig"] == kinds["RunSettings"] == kinds["SweepConfig"] == "type"
    readme = (ROOT / "README.md").read_text()
    api = readme[readme.index("## Python API"):readme.index("## Keras Tuner interop")]
    assert [n for n in kinds if n != "__version__" and f"`kbn.{n}" not in api] == []


SETTLED = """
import json, os, sys
import kbn
kbn.train  # the first name that needs Keras
import keras
print(json.dumps({"env": os.environ.get("KERAS_BACKEND"), "keras": keras.backend.backend(),
                  "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("given, expect", [(None, "jax"), ("tensorflow", "tensorflow")])
def test_the_python_api_settles_the_backend_as_the_cli_does(given, expect):
    """Without KERAS_BACKEND a script gets kbn's default (JAX: Keras's own, TensorFlow, trained the MLPs
    3-5x slower), and no TensorFlow import; with KERAS_BACKEND=tensorflow, TensorFlow's C++ start-up
    lines (absl's, oneDNN's, CUDA's) go to a file, not to the script's stderr."""
    import json
    import re

    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = str(ROOT)
    if given:
        env["KERAS_BACKEND"] = given
    r = subprocess.run([sys.executable, "-c", SETTLED], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["env"] == got["keras"] == expect and got["tensorflow"] == (expect == "tensorflow")
    assert not re.search(r"^[IWEF]\d{4} |absl::InitializeLog", r.stderr, re.M), r.stderr[-2000:]


@pytest.mark.slow
def test_a_program_whose_first_keras_import_is_kbn_models_gets_kbns_backend():
    """`from kbn.models import dense_block` at the top of a notebook imports Keras: kbn's backend is
    settled first there too (JAX without KERAS_BACKEND, not Keras's TensorFlow)."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    code = "from kbn.models import dense_block; import keras, sys; print(keras.backend.backend(), 'tensorflow' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.split()[-2:] == ["jax", "False"], r.stderr[-2000:]
