"""A finished sweep never loses a result it once had (issue 21, items 1, 2 and 9): a completed trial
counts only while its run folder is whole -- there, sealed by result.json, and for a final run with a
whole model.keras -- so `kbn status`, `open_sweep` and the report name what is gone, and a resume
trains exactly it again. Every test damages a copy of one real finished sweep (conftest's
finished_tiny_sweep: 2 cells, 14 trials, 4 final runs)."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import kbn
from kbn.cli import main
from kbn.core.config import load_sweep
from kbn.sweep.status import status_rows

ROOT = Path(__file__).resolve().parents[1]
NONE, BATCH = "mnist-mlp-none-sgd", "mnist-mlp-batch-sgd"


@pytest.fixture
def sweep_copy(finished_tiny_sweep, tmp_path):
    """A copy of the finished tiny sweep, to damage; its sweep file lies beside the original."""
    out = tmp_path / "sweep"
    shutil.copytree(finished_tiny_sweep, out)
    return out


def final_runs(folder) -> list[Path]:
    return sorted((folder / "runs").iterdir())


def status_text(folder, capsys) -> str:
    assert main(["status", str(folder)]) == 0
    return capsys.readouterr().out


def rows(folder) -> dict:
    return {r[0]: r for r in status_rows(folder, live=False)}


def redone_by_resume(folder, sweep_file) -> list[str]:
    """The trials a resumed sweep's oracle would train again (their run folders, relative), read
    from its retry queue without training anything."""
    from kbn.sweep.folder import run_folder
    from kbn.sweep.tuner import SweepTuner

    tuner = SweepTuner(load_sweep(sweep_file), folder, log=lambda *_: None)
    oracle = tuner.oracle
    return sorted(run_folder(oracle.sweep, folder, oracle.trials[i].hyperparameters.values)
                  .relative_to(folder).as_posix() for i in oracle._retry_queue)


# ---------------------------------------------------------------- item 1: a run folder or result.json gone


def test_a_deleted_final_run_folder_or_result_json_is_named_and_redone(sweep_copy, finished_tiny_sweep, capsys):
    runs = final_runs(sweep_copy)
    shutil.rmtree(runs[0])  # mnist-mlp-batch-sgd-lr0.1-s0
    (runs[2] / "result.json").unlink()  # mnist-mlp-none-sgd-lr0.316-s0
    text = status_text(sweep_copy, capsys)
    assert "2 problem(s)" in text, text  # before: a traceback (and before that, "done 2/2" and no problem)
    assert f"{BATCH}: runs/{runs[0].name}: the run folder is missing; redone on resume" in text
    assert f"{NONE}: runs/{runs[2].name}: result.json is missing; redone on resume" in text
    r = rows(sweep_copy)
    assert r[BATCH][1] == "stopped" and r[BATCH][4] == "1/2"
    assert r[NONE][1] == "stopped" and r[NONE][4] == "1/2"
    assert redone_by_resume(sweep_copy, finished_tiny_sweep.parent / "tiny.toml") == \
        sorted([f"runs/{runs[0].name}", f"runs/{runs[2].name}"])
    s = kbn.open_sweep(sweep_copy)
    assert len(s.problems()) == 2
    f = s.final_runs.set_index("folder")
    assert f.loc[str(runs[0]), "status"] == "damaged" and f.loc[str(runs[2]), "status"] == "damaged"
    assert set(f.status) == {"damaged", "finished"}


def test_deleting_runs_and_search_entirely_leaves_no_cell_done(sweep_copy, finished_tiny_sweep, capsys):
    shutil.rmtree(sweep_copy / "runs")
    shutil.rmtree(sweep_copy / "search")
    text = status_text(sweep_copy, capsys)
    assert "14 problem(s)" in text, text  # before: "all done", no problem
    assert text.count("the run folder is missing") == 14
    assert all(r[1] != "done" and r[2] == "0/3" and r[4] == "0/2" for r in rows(sweep_copy).values())
    assert len(kbn.open_sweep(sweep_copy).problems()) == 14
    assert len(redone_by_resume(sweep_copy, finished_tiny_sweep.parent / "tiny.toml")) == 14


def test_a_missing_search_trial_folder_is_noticed(sweep_copy, finished_tiny_sweep, capsys):
    gone = sweep_copy / "search" / "coarse" / f"{NONE}-lr0.1-s2"
    shutil.rmtree(gone)
    text = status_text(sweep_copy, capsys)
    assert f"{NONE}: search/coarse/{gone.name}: the run folder is missing; redone on resume" in text, text
    r = rows(sweep_copy)
    assert r[NONE][2] == "2/3" and r[NONE][1] != "done" and r[BATCH][1] == "done"
    assert redone_by_resume(sweep_copy, finished_tiny_sweep.parent / "tiny.toml") == [f"search/coarse/{gone.name}"]


# ---------------------------------------------------------------- item 2: a final run's model.keras


def _not_a_keras_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "no Keras config here")


@pytest.mark.parametrize("damage,why", [
    (lambda p: p.unlink(), "model.keras is missing"),
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "model.keras is not a whole Keras file"),
    (lambda p: p.write_bytes(b""), "model.keras is empty"),
    (_not_a_keras_zip, "model.keras is not a whole Keras file"),
])
def test_a_final_runs_model_keras_deleted_or_truncated_is_named_and_redone(sweep_copy, finished_tiny_sweep, capsys,
                                                                          damage, why):
    run = final_runs(sweep_copy)[3]  # mnist-mlp-none-sgd-lr0.316-s1
    damage(run / "model.keras")
    text = status_text(sweep_copy, capsys)
    assert "1 problem(s)" in text and f"{NONE}: runs/{run.name}: {why}" in text, text
    assert rows(sweep_copy)[NONE][4] == "1/2"
    assert redone_by_resume(sweep_copy, finished_tiny_sweep.parent / "tiny.toml") == [f"runs/{run.name}"]
    s = kbn.open_sweep(sweep_copy)
    assert len(s.problems()) == 1 and why in s.problems()[0]
    f = s.final_runs
    row = f[f.folder == str(run)].iloc[0]
    assert row.status == "damaged" and not isinstance(row.model, str)  # never handed out to load_model
    assert row.test_accuracy == json.loads((run / "result.json").read_text())["metrics"]["test_accuracy"]
    assert f.model.notna().sum() == 3  # the other final runs' models are still handed out


# ---------------------------------------------------------------- item 9: nothing to show, said


def test_kbn_tensorboard_refuses_a_folder_with_nothing_to_show(tmp_path, capsys):
    assert main(["tensorboard", str(tmp_path)]) == 2  # before: served an empty TensorBoard, no word
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err and "no TensorBoard event files" in err, err


def test_kbn_tensorboard_on_a_sweep_whose_final_runs_are_gone_points_to_all(sweep_copy, capsys):
    shutil.rmtree(sweep_copy / "runs")
    (sweep_copy / "runs").mkdir()
    assert main(["tensorboard", str(sweep_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--all" in err and str(sweep_copy / "runs") in err, err


def test_open_sweep_on_a_folder_whose_runs_are_gone_says_so(sweep_copy):
    shutil.rmtree(sweep_copy / "runs")
    s = kbn.open_sweep(sweep_copy)
    f = s.final_runs
    assert len(f) == 4 and set(f.status) == {"damaged"}  # before: "completed", accuracy None, no problem
    assert len(s.problems()) == 4 and all("the run folder is missing" in p for p in s.problems())


# ---------------------------------------------------------------- done means: fault injection, end to end


def _report(folder) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "kbn", "report", str(folder), "--format", "csv"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # every number but the measured seconds of the retrained runs (a wall clock is not a result)
    return [line for line in r.stdout.splitlines() if "seconds" not in line]


@pytest.mark.slow
def test_fault_injection_a_lost_run_result_and_model_are_named_and_exactly_they_are_retrained(
        sweep_copy, finished_tiny_sweep, kbn_process, monkeypatch):
    monkeypatch.setenv("KBN_DATA_DIR", str(finished_tiny_sweep.parent / "cache"))  # the fixture's dataset
    original = _report(finished_tiny_sweep)
    runs = final_runs(sweep_copy)  # batch s0, batch s1, none s0, none s1
    shutil.rmtree(runs[0])
    (runs[2] / "result.json").unlink()
    (runs[3] / "model.keras").unlink()
    p = subprocess.run([sys.executable, "-m", "kbn", "status", str(sweep_copy)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "3 problem(s)" in p.stdout, p.stdout + p.stderr
    assert f"runs/{runs[0].name}: the run folder is missing" in p.stdout
    assert f"runs/{runs[2].name}: result.json is missing" in p.stdout
    assert f"runs/{runs[3].name}: model.keras is missing" in p.stdout
    stamps = {f: f.stat().st_mtime_ns for f in sweep_copy.rglob("result.json")}
    r = kbn_process(["sweep", str(finished_tiny_sweep.parent / "tiny.toml"), "--logdir", str(sweep_copy)])
    text, _ = r.communicate(timeout=300)
    assert r.returncode == 0, text[-3000:]
    assert "(11 already done)" in text, text[-3000:]
    redone = sorted(f.parent.name for f in sweep_copy.rglob("result.json")
                    if f not in stamps or f.stat().st_mtime_ns != stamps[f])
    assert redone == sorted(r.name for r in (runs[0], runs[2], runs[3]))  # exactly those three trained again
    assert all((r / "model.keras").is_file() for r in runs)
    p = subprocess.run([sys.executable, "-m", "kbn", "status", str(sweep_copy)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert "problem" not in p.stdout, p.stdout
    assert all(r[1] == "done" for r in status_rows(sweep_copy, live=False))
    assert _report(sweep_copy) == original
    assert kbn.open_sweep(sweep_copy).problems() == []
    assert json.loads((runs[3] / "result.json").read_text())["status"] == "finished"


def test_a_file_where_a_run_folder_was_is_named_and_replaced_by_the_run(sweep_copy, capsys, tiny_dataset):
    from kbn.runs.runlog import RunLog

    run = final_runs(sweep_copy)[0]
    shutil.rmtree(run)
    run.write_text("not a folder")
    assert f"runs/{run.name}: the run folder is a file, not a folder" in status_text(sweep_copy, capsys)
    RunLog(run).start({"settings": {"seed": 0}, "schedule": {"periods": 1}})  # before: NotADirectoryError
    assert (run / "config.json").is_file() and (run / "metrics.csv").is_file()
