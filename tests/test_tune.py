"""kbn.sweep.tuner: the oracle (driven through Keras Tuner's own calls, no training) and the tuner, and
whole sweeps: search then final runs, resume after kill -9, damage, failures and packing."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kbn import data
from kbn.core.config import load_sweep
from kbn.sweep.plan import planned_trials
from kbn.sweep.status import status_rows
from kbn.sweep.runner import run_sweep

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the oracle, driven with a stub tuner

ORACLE_SWEEP = {"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"], "epochs": 1,
                "seeds": [0, 1], "search": {"coarse": [0.001, 0.01, 0.1, 1.0], "fine_per_side": 1}}
MADE_UP = {0.001: 0.5, 0.01: 0.7, 0.1: 0.9, 1.0: 0.2, 0.0316: 0.95, 0.316: 0.4}  # lr -> a search score


class StubTuner:
    """What SweepTuner does with a trial, through Keras Tuner's own oracle calls, minus the training: the
    run folder is written with made-up numbers and the trial scores MADE_UP[lr] (a final run, 0.8)."""

    def __init__(self, oracle, logdir, write_run):
        self.oracle, self.logdir, self.write_run = oracle, logdir, write_run

    def start(self, tuner_id="tuner0"):
        return self.oracle.create_trial(tuner_id)

    def finish(self, trial):
        from kbn.sweep.folder import run_folder

        values = trial.hyperparameters.values
        self.write_run(run_folder(self.oracle.sweep, self.logdir, values), rows=1)
        score = 0.8 if values["phase"] == "final" else MADE_UP[values["lr"]]
        self.oracle.update_trial(trial.trial_id, {"score": score}, step=0)
        trial.status = "COMPLETED"
        self.oracle.end_trial(trial)


def stub_oracle(sweep, logdir):
    from kbn.sweep.oracle import SweepOracle

    oracle = SweepOracle(sweep, log=lambda *_: None)
    oracle.verbose = 0  # as SweepTuner has it: kbn's own progress lines, not Keras Tuner's tables
    oracle._set_project_dir(str(logdir), "tuner")  # what Keras Tuner's BaseTuner does with a new oracle
    oracle.reload()
    return oracle


def phase_lr_seed(trial):
    v = trial.hyperparameters.values
    return v["phase"], v["lr"], v["seed"]


def test_the_oracle_searches_coarse_then_fine_around_the_winner_then_the_final_seeds(tmp_path, write_finished_run):
    from kbn.core.config import sweep_from_dict

    sweep = sweep_from_dict(ORACLE_SWEEP)
    tuner = StubTuner(stub_oracle(sweep, tmp_path), tmp_path, write_finished_run)
    coarse = [tuner.start(f"tuner{i}") for i in range(4)]  # four tuners at once: the whole coarse grid
    assert [phase_lr_seed(t) for t in coarse] == [("coarse", lr, 2) for lr in (0.001, 0.01, 0.1, 1.0)]
    assert [t.trial_id for t in coarse] == ["0000", "0001", "0002", "0003"]
    assert tuner.start("tuner4").status == "IDLE"  # what comes next waits for the coarse results
    for t in coarse:
        tuner.finish(t)
    fine = [tuner.start(f"tuner{i}") for i in range(2)]
    assert [phase_lr_seed(t) for t in fine] == [("fine", 0.0316, 2), ("fine", 0.316, 2)]
    lo, hi = fine[0].hyperparameters.values["lr"], fine[1].hyperparameters.values["lr"]
    assert lo < 0.1 < hi and lo * hi == pytest.approx(0.1**2, rel=1e-2)  # centred, in log, on the coarse winner
    assert tuner.start("tuner2").status == "IDLE"
    for t in fine:
        tuner.finish(t)
    final = [tuner.start(f"tuner{i}") for i in range(2)]
    assert [phase_lr_seed(t) for t in final] == [("final", 0.0316, 0), ("final", 0.0316, 1)]  # the best of both
    assert tuner.oracle.progress()[sweep.cells()[0].key]["coarse_best"] == 0.1
    for t in final:
        tuner.finish(t)
    assert tuner.oracle.finished() and tuner.start("tuner0").status == "STOPPED"


def test_a_reloaded_oracle_resumes_where_the_trials_on_disk_stop(tmp_path, write_finished_run):
    from kbn.core.config import sweep_from_dict

    sweep = sweep_from_dict(ORACLE_SWEEP)
    tuner = StubTuner(stub_oracle(sweep, tmp_path), tmp_path, write_finished_run)
    while (t := tuner.start()).hyperparameters.values["phase"] != "final":
        tuner.finish(t)
    tuner.finish(t)  # final seed 0 ends; seed 1 is handed out and then the process dies (kill -9)
    lost = tuner.start()
    assert phase_lr_seed(lost) == ("final", 0.0316, 1) and lost.trial_id == "0007"
    again = StubTuner(stub_oracle(sweep, tmp_path), tmp_path, write_finished_run)  # from the trial files alone
    progress = again.oracle.progress()[sweep.cells()[0].key]
    assert (progress["coarse"], progress["fine"], progress["final"]) == ([4, 4], [2, 2], [1, 2])
    assert progress["chosen"] == 0.0316
    redo = again.start()
    assert (redo.trial_id, phase_lr_seed(redo)) == ("0007", ("final", 0.0316, 1))  # under its own id
    again.finish(redo)
    assert again.oracle.finished() and again.start().status == "STOPPED"
    assert sorted(again.oracle.trials) == [f"{i:04d}" for i in range(8)]


# ---------------------------------------------------------------- running sweeps


@pytest.mark.slow
def test_sweep_searches_then_trains_the_chosen_lr_per_seed(tiny, tmp_path, trial_states):
    sweep = load_sweep(tiny)
    lines = []
    assert run_sweep(sweep, tmp_path / "out", log=lines.append) == 0
    states = trial_states(tmp_path / "out")
    assert len(states) == planned_trials(sweep) == 2 * (3 + 2 + 2)
    assert all(s["status"] == "COMPLETED" for s in states.values())
    for cell in sweep.cells():
        mine = [s for s in states.values() if s["hyperparameters"]["values"]["cell"] == cell.key]
        search = [s for s in mine if s["hyperparameters"]["values"]["phase"] != "final"]
        best = max(search, key=lambda s: s["score"])  # trial ids run in grid order: ties go to the first
        finals = [s["hyperparameters"]["values"] for s in mine if s["hyperparameters"]["values"]["phase"] == "final"]
        assert {f["lr"] for f in finals} == {best["hyperparameters"]["values"]["lr"]}
        assert sorted(f["seed"] for f in finals) == [0, 1]
    runs = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 4 and all((tmp_path / "out" / "runs" / r / "result.json").exists() for r in runs)
    assert len(list((tmp_path / "out" / "search" / "coarse").iterdir())) == 6
    assert sum("[" in line and "/14]" in line for line in lines) == 14
    assert "left" in lines[-1]
    # each trial shows up in TensorBoard's HParams dashboard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "out" / "runs" / runs[0]))
    ea.Reload()
    assert "_hparams_/session_start_info" in ea.PluginTagToContent("hparams")
    rows = status_rows(tmp_path / "out", live=False)
    assert [r[1] for r in rows] == ["done", "done"] and all(r[5] != "-" for r in rows)
    from kbn.cli import main

    assert main(["status", str(tmp_path / "out")]) == 0  # the command line hands over a str
    assert main(["status", str(tmp_path)]) == 2  # not a sweep folder: one line, no traceback
    # running it again redoes nothing
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("result.json")}
    assert run_sweep(sweep, tmp_path / "out", log=lines.append) == 0
    assert len(trial_states(tmp_path / "out")) == 14
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("result.json")}


@pytest.mark.slow
def test_divergent_trials_are_results_and_do_not_abort_the_search(tiny, tmp_path, monkeypatch, trial_states, write_cache):
    monkeypatch.setattr(data, "load", write_cache(inf_pixels=True))
    sweep = load_sweep(tiny)
    assert run_sweep(sweep, tmp_path / "out", log=lambda *_: None) == 0
    states = trial_states(tmp_path / "out")
    assert len(states) == 14  # every trial diverged (far more than 3 in a row), none was skipped
    assert all(s["status"] == "COMPLETED" and s["score"] == pytest.approx(0.1) for s in states.values())
    assert all(s["metrics"]["metrics"]["diverged"]["observations"][0]["value"] == [1.0] for s in states.values())


@pytest.mark.slow
def test_kill_9_then_resume_redoes_nothing_finished(tiny, tmp_path, trial_states, chosen_lrs, kbn_process):
    out = tmp_path / "killed"
    p = kbn_process(["sweep", str(tiny), "--logdir", str(out)])
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a few trials have ended (mid-sweep)
        ended = [s for s in trial_states(out).values() if s["status"] == "COMPLETED"] if out.exists() else []
        if len(ended) >= 4:
            break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = {tid: s for tid, s in trial_states(out).items() if s["status"] == "COMPLETED"}
    assert 4 <= len(before) < 14
    stamps = {f: f.stat().st_mtime_ns for f in out.rglob("result.json")}
    r = kbn_process(["sweep", str(tiny), "--logdir", str(out)])
    text, _ = r.communicate(timeout=300)
    assert r.returncode == 0, text[-3000:]
    assert f"({len(before)} already done)" in text
    after = trial_states(out)
    assert len(after) == 14 and all(s["status"] == "COMPLETED" for s in after.values())
    for tid, s in before.items():  # finished trials were not rerun
        assert after[tid]["score"] == s["score"]
    for f, t in stamps.items():
        assert f.stat().st_mtime_ns == t, f"{f} was rewritten"
    # the outcome equals an uninterrupted sweep's
    run_sweep(load_sweep(tiny), tmp_path / "straight", log=lambda *_: None)
    assert chosen_lrs(out) == chosen_lrs(tmp_path / "straight")


@pytest.mark.slow
def test_packed_sweep_trains_each_grid_as_one_model(tiny, tmp_path, trial_states, chosen_lrs):
    sweep = load_sweep(tiny)
    lines = []
    assert run_sweep(sweep, tmp_path / "out", log=lines.append, pack=3) == 0
    states = trial_states(tmp_path / "out")
    assert len(states) == 14 and all(s["status"] == "COMPLETED" for s in states.values())
    packed = [json.loads(p.read_text())["schedule"]["packed_with"]
              for p in (tmp_path / "out" / "search" / "coarse").glob("*/config.json")]
    assert packed == [3] * 6  # each cell's coarse grid (3 learning rates) trained as one model
    assert sum("(3 packed)" in line for line in lines) == 6
    # the final runs: each cell's 2 seeds as one model, each seed with its own data order
    final = [json.loads(p.read_text())["schedule"] for p in (tmp_path / "out" / "runs").glob("*/config.json")]
    assert [(f["packed_with"], f["own_data_orders"]) for f in final] == [(2, True)] * 4
    assert None not in chosen_lrs(tmp_path / "out").values()


# ---------------------------------------------------------------- integrity: errors, damage, signals


def _trial_dirs(logdir):
    return sorted(p.name for p in Path(logdir, "tuner").glob("trial_*"))


def test_missing_data_fails_before_any_trial_in_one_line(tmp_path, capsys, monkeypatch, debian_dirs, tiny_text):
    from kbn.cli import main

    debian_dirs("mnist", [])
    f = tmp_path / "s.toml"
    f.write_text(tiny_text)
    assert main(["sweep", str(f), "--logdir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("kbn: error: ")
    assert err.count("kbn: error") == 1 and err.count("\n") <= 2, err  # at most a "trying tfds" line before it
    assert "no data for 'mnist'" in err and "kbn data prepare mnist" in err
    assert _trial_dirs(tmp_path / "out") == []


def test_a_subset_larger_than_the_data_fails_before_any_trial(tiny, tmp_path, capsys, tiny_text):
    from kbn.cli import main

    tiny.write_text(tiny_text.replace("batch_size = 32", "batch_size = 32\nsubset = 1000000"))
    assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "subset: 1000000 is more than the 256 training examples" in err, err
    assert _trial_dirs(tmp_path / "out") == []


@contextlib.contextmanager
def failing_train(error, when):
    """The tuner's train raises `error` for the trials where when(cfg) is true."""
    from kbn.sweep import tuner

    real = tuner.train

    def train(cfg, *a, **k):
        if when(cfg):
            raise error
        return real(cfg, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tuner, "train", train)
        yield


@pytest.mark.slow
def test_a_kbn_error_inside_a_trial_stops_the_sweep_and_the_trial_runs_on_resume(tiny, tmp_path, monkeypatch, trial_states):
    from kbn.core.errors import DataError

    sweep = load_sweep(tiny)
    with failing_train(DataError("the data went away"), lambda cfg: cfg.norm == "batch" and cfg.lr == 0.1):
        with pytest.raises(DataError, match="the data went away"):
            run_sweep(sweep, tmp_path / "out", log=lambda *_: None)
    states = trial_states(tmp_path / "out")
    stuck = [s for s in states.values() if s["status"] != "COMPLETED"]
    assert len(stuck) == 1 and stuck[0]["status"] == "RUNNING"  # unfinished, not FAILED
    assert stuck[0]["hyperparameters"]["values"]["lr"] == 0.1
    assert run_sweep(sweep, tmp_path / "out", log=lambda *_: None) == 0
    after = trial_states(tmp_path / "out")
    assert len(after) == 14 and all(s["status"] == "COMPLETED" for s in after.values())
    assert stuck[0]["trial_id"] in after  # it ran again under its own id


@pytest.mark.slow
def test_a_crashed_trial_is_failed_holds_its_cell_and_is_retried_on_resume(tiny, tmp_path, monkeypatch, capsys, trial_states, chosen_lrs):
    from kbn.cli import main

    sweep = load_sweep(tiny)
    bad = lambda cfg: cfg.norm == "batch" and cfg.lr == 0.1  # noqa: E731
    lines = []
    with failing_train(RuntimeError("boom\nsecond line"), bad):
        assert run_sweep(sweep, tmp_path / "out", log=lines.append) == 1
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1 and "FAILED: RuntimeError: boom (traceback in tuner/trial_" in failed[0]
    assert not any("second line" in line for line in lines)
    rows = {r[0]: r for r in status_rows(tmp_path / "out", live=False)}
    assert rows["mnist-mlp-batch-sgd"][1] == "failed" and rows["mnist-mlp-batch-sgd"][5] == "-"  # no lr chosen
    assert rows["mnist-mlp-none-sgd"][1] == "done"
    assert not list((tmp_path / "out" / "runs").glob("mnist-mlp-batch-*"))  # no final run from a broken search
    assert main(["status", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "failed: RuntimeError: boom; retried on resume" in out
    assert main(["report", str(tmp_path / "out")]) == 0  # the report says why the batch-norm cell is missing
    err = capsys.readouterr().err
    assert "kbn: sweep: mnist-mlp-batch-sgd: " in err and "failed: RuntimeError: boom" in err
    # the same command again retries it (and nothing else), then the cell completes
    assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "failed last time (RuntimeError: boom); it runs again" in out
    assert all(s["status"] == "COMPLETED" for s in trial_states(tmp_path / "out").values())
    run_sweep(sweep, tmp_path / "straight", log=lambda *_: None)
    assert chosen_lrs(tmp_path / "out") == chosen_lrs(tmp_path / "straight")


def test_a_finished_sweep_with_a_failed_trial_says_so_again_rather_than_finished(tiny, tmp_path, monkeypatch, capsys):
    from kbn.cli import main

    with failing_train(RuntimeError("boom"), lambda cfg: cfg.lr == 1.0):
        assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--workers", "1"]) == 1
        assert "2 failed trial(s)" in capsys.readouterr().out
        assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--workers", "1"]) == 1  # still broken: not finished
    out = capsys.readouterr().out
    assert "finished;" not in out and "failed trial(s)" in out


@pytest.mark.slow
def test_an_unreadable_trial_file_never_makes_ids_collide(tiny, tmp_path, trial_states, kbn_process):
    out = tmp_path / "out"
    run_sweep(load_sweep(tiny), out, log=lambda *_: None)
    states = trial_states(out)
    victim = out / "tuner" / "trial_0003" / "trial.json"
    victim.write_text(victim.read_text()[:50])  # truncated
    from kbn.cli import main

    assert main(["status", str(out)]) == 0  # reported, not silently dropped
    r = kbn_process(["sweep", str(tiny), "--logdir", str(out)])
    text, _ = r.communicate(timeout=300)  # before the fix: an endless loop of colliding ids
    assert r.returncode == 0, text[-3000:]
    assert "trial_0003/trial.json is unreadable" in text and "moved to" in text
    after = trial_states(out)
    assert len(after) == 14 and "0003" not in after and "0014" in after
    assert all(after[t]["score"] == s["score"] for t, s in states.items() if t != "0003")
    lost = states["0003"]["hyperparameters"]["values"]
    assert after["0014"]["hyperparameters"]["values"] == lost and after["0014"]["score"] == states["0003"]["score"]
    assert len(list((out / "tuner" / "damaged").iterdir())) == 1


@pytest.mark.slow
def test_next_trial_id_follows_the_highest_on_disk(tiny, tmp_path):
    from kbn.sweep.tuner import SweepTuner

    out = tmp_path / "out"
    run_sweep(load_sweep(tiny), out, log=lambda *_: None)
    (out / "tuner" / "trial_0001" / "trial.json").write_text("")
    os.rename(out / "tuner" / "trial_0013", out / "tuner" / "trial_0020")  # a gap: ids are not a count
    tuner = SweepTuner(load_sweep(tiny), out, log=lambda *_: None)
    assert tuner.oracle._next_id == 21


@pytest.mark.slow
def test_fault_injection_status_names_each_damage_and_resume_redoes_exactly_those(tiny, tmp_path, kbn_process):
    import shutil

    from kbn.cli import main

    good = tmp_path / "good"
    run_sweep(load_sweep(tiny), good, log=lambda *_: None)

    def report(folder):
        r = subprocess.run([sys.executable, "-m", "kbn", "report", str(folder), "--format", "csv"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        # every number but the measured seconds of the retrained runs (a wall clock is not a result)
        return [line for line in r.stdout.splitlines() if "seconds" not in line]

    original = report(good)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    runs = sorted((bad / "runs").iterdir())
    truncated = bad / "tuner" / "trial_0004" / "trial.json"
    truncated.write_text(truncated.read_text()[:-30])
    (runs[0] / "metrics.csv").unlink()
    (runs[1] / "result.json").write_text("garbage")
    p = subprocess.run([sys.executable, "-m", "kbn", "status", str(bad)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert "3 problem(s)" in p.stdout, p.stdout
    assert "tuner/trial_0004/trial.json is unreadable" in p.stdout
    assert f"runs/{runs[0].name}: metrics.csv is missing" in p.stdout
    assert f"runs/{runs[1].name}: result.json is unreadable" in p.stdout
    finals = [r for r in status_rows(bad, live=False) if r[4] != "2/2"]
    assert len(finals) >= 1  # a damaged final run does not count as done
    stamps = {f: f.stat().st_mtime_ns for f in bad.rglob("result.json")}
    r = kbn_process(["sweep", str(tiny), "--logdir", str(bad)])
    text, _ = r.communicate(timeout=300)
    assert r.returncode == 0, text[-3000:]
    redone = sorted(f.parent.name for f, t in stamps.items() if not f.exists() or f.stat().st_mtime_ns != t)
    assert redone == sorted([runs[0].name, runs[1].name])  # exactly the damaged runs were trained again
    assert "problem" not in subprocess.run([sys.executable, "-m", "kbn", "status", str(bad)], cwd=ROOT,
                                           capture_output=True, text=True, timeout=120).stdout
    assert report(bad) == original
    assert main(["status", str(bad)]) == 0


# ---------------------------------------------------------------- answer: selection without reuse


@pytest.mark.slow
def test_final_runs_never_repeat_a_search_training_and_record_the_protocol(tiny, tmp_path):
    sweep = load_sweep(tiny)
    run_sweep(sweep, tmp_path / "out", log=lambda *_: None)
    search = [json.loads(p.read_text()) for p in (tmp_path / "out" / "search").rglob("config.json")]
    final = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*/config.json")]
    trained = {(c["settings"]["dataset"], c["settings"]["norm"], c["settings"]["lr"], c["settings"]["seed"])
               for c in search}
    assert {c["settings"]["seed"] for c in search} == {2}
    assert not trained & {(c["settings"]["dataset"], c["settings"]["norm"], c["settings"]["lr"],
                           c["settings"]["seed"]) for c in final}
    for c in search + final:
        assert c["protocol"]["search_seeds"] == [2] and c["protocol"]["select_on"] == "validation"
        assert c["protocol"]["search_epochs"] == 1 and c["protocol"]["final_seeds"] == [0, 1]
    assert {c["protocol"]["phase"] for c in final} == {"final"}
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["search"]["seeds"] == [2]


# ---------------------------------------------------------------- found by trying bad inputs by hand


def test_a_batch_larger_than_the_training_set_fails_before_any_trial(tiny, tmp_path, capsys, tiny_text):
    from kbn.cli import main

    tiny.write_text(tiny_text.replace("batch_size = 32", "batch_size = 5000"))
    assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--workers", "1"]) == 2
    assert "batch_size: 5000 is more than the 256 training examples" in capsys.readouterr().err




def test_the_eta_learns_from_training_time_not_compile_time(tiny, tmp_path, progress_times):
    """A cell's first trial compiles its programs (here without the disk cache: seconds, where the
    trials train for a fraction of one); the cell's other trials reuse them. The ETA after the first
    trial is then of the order of what the other 13 trials took, not 13 compilations (before: 3-32x
    too long early in a sweep)."""
    import jax

    from kbn.training import jax_loop

    jax_loop._COMPILED.clear()
    cached = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    lines = []
    try:
        assert run_sweep(load_sweep(tiny), tmp_path / "out", log=lines.append) == 0
    finally:
        jax.config.update("jax_enable_compilation_cache", cached)
    times = progress_times(lines)
    assert len(times) == 14
    (first, eta), end = times[0], times[-1][0]
    assert eta <= 2 * (end - first) + 2, (times, lines)
