import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY, write_cache
from kbn import data
from kbn.config import Cell, load_sweep, sweep_from_dict
from kbn.errors import ConfigError
from kbn.plan import cell_progress, folder_progress, planned_trials, status_rows
from kbn.sweep_folder import SweepBusy, sweep_lock
from kbn.tune import run_sweep

ROOT = Path(__file__).resolve().parents[1]

def trial_states(logdir):
    out = {}
    for p in sorted(Path(logdir, "tuner").glob("trial_*/trial.json")):
        s = json.loads(p.read_text())
        out[s["trial_id"]] = s
    return out


def chosen(logdir):
    return {k: p["chosen"] for k, p in folder_progress(Path(logdir)).progress.items()}


# ---------------------------------------------------------------- sweep files


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_every_bundled_sweep_file_is_valid(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem and sweep.cells()


def test_bundled_sweeps_cover_the_study():
    shallow = load_sweep(ROOT / "sweeps/thesis-shallow.toml")
    assert set(shallow.datasets) == {"mnist", "cifar10"} and set(shallow.archs) == {"mlp", "cnn"}
    assert shallow.optimizers == ("sgd", "sgdm", "adam", "adagrad", "adadelta", "rmsprop") and shallow.epochs == 50
    assert len(shallow.cells()) == 48
    deep = load_sweep(ROOT / "sweeps/thesis-deep.toml")
    assert set(deep.archs) == {"deep_mlp", "deep_cnn"}
    poster = load_sweep(ROOT / "sweeps/poster-norms.toml")
    assert poster.norms == ("none", "batch", "layer") and poster.batch_size == 60
    assert poster.eval_every_steps == 5000 and poster.total_steps == 50000
    assert set(load_sweep(ROOT / "sweeps/fashion-full.toml").datasets) == {"fashion_mnist"}


@pytest.mark.parametrize(
    "text,expect",
    [
        ('datasets = ["imagenet"]', ["datasets[0]", "'imagenet'", "cifar10"]),
        ('norms = ["none", "weight"]', ["norms[1]", "'weight'", "layer"]),
        ('archs = ["resnet"]', ["archs[0]", "'resnet'", "deep_cnn"]),
        ('optimizers = ["lion"]', ["optimizers[0]", "'lion'", "adadelta"]),
        ("epochs = 0", ["epochs", "0"]),
        ('epochs = "ten"', ["epochs", "'ten'"]),
        ("colour = 3", ["unknown field 'colour'", "datasets", "select_on"]),
        ('select_on = "train"', ["select_on", "'train'", "validation, test"]),
        ("seeds = []", ["seeds"]),
        ("[search]\ncoarse = []", ["search.coarse", "non-empty"]),
        ("[search]\ncoarse = [0.1, -1]", ["search.coarse[1]", "-1"]),
        ("[search]\nfine = 2", ["search.fine", "fine_per_side"]),
        ("[search.coarse_by_optimizer]\nadam = [0.1]", ["coarse_by_optimizer", "'adam'", "sgd"]),
    ],
)
def test_bad_sweep_files_name_file_field_and_choices(tmp_path, text, expect):
    base = {"datasets": '["mnist"]', "archs": '["mlp"]', "norms": '["none"]', "optimizers": '["sgd"]', "epochs": "1"}
    key = text.split("=")[0].strip()
    lines = [f"{k} = {v}" for k, v in base.items() if k != key]
    f = tmp_path / "bad.toml"
    f.write_text("\n".join(lines) + "\n" + text + "\n")
    with pytest.raises(ConfigError) as e:
        load_sweep(f)
    msg = str(e.value)
    assert msg.startswith(str(f)) and "\n" not in msg
    for part in expect:
        assert part in msg, msg


def test_unreadable_or_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_sweep(tmp_path / "missing.toml")
    (tmp_path / "b.toml").write_text("datasets = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sweep(tmp_path / "b.toml")


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


# ---------------------------------------------------------------- running sweeps


@pytest.mark.slow
def test_sweep_searches_then_trains_the_chosen_lr_per_seed(tiny, tmp_path):
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
def test_divergent_trials_are_results_and_do_not_abort_the_search(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "load", write_cache(inf_pixels=True))
    sweep = load_sweep(tiny)
    assert run_sweep(sweep, tmp_path / "out", log=lambda *_: None) == 0
    states = trial_states(tmp_path / "out")
    assert len(states) == 14  # every trial diverged (far more than 3 in a row), none was skipped
    assert all(s["status"] == "COMPLETED" and s["score"] == pytest.approx(0.1) for s in states.values())
    assert all(s["metrics"]["metrics"]["diverged"]["observations"][0]["value"] == [1.0] for s in states.values())


def test_a_live_sweep_locks_its_folder(tiny, tmp_path):
    with sweep_lock(tmp_path / "out"):
        with pytest.raises(SweepBusy, match="in use by a live kbn sweep"):
            run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out" / "tuner").exists()


@pytest.mark.slow
def test_resuming_with_another_sweep_file_is_refused(tiny, tmp_path):
    run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)
    tiny.write_text(TINY.replace("epochs = 1", "epochs = 2"))
    with pytest.raises(ConfigError, match="epochs"):
        run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)


def _kbn(args, **kw):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "kbn", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_kill_9_then_resume_redoes_nothing_finished(tiny, tmp_path):
    out = tmp_path / "killed"
    p = _kbn(["sweep", str(tiny), "--logdir", str(out)])
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
    r = _kbn(["sweep", str(tiny), "--logdir", str(out)])
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
    assert chosen(out) == chosen(tmp_path / "straight")


@pytest.mark.slow
def test_two_workers_on_loopback_choose_the_same_learning_rates(tiny, tmp_path):
    p = _kbn(["sweep", str(tiny), "--logdir", str(tmp_path / "dist"), "--workers", "2"])
    text, _ = p.communicate(timeout=400)
    assert p.returncode == 0, text[-3000:]
    assert "chief serving the oracle on 127.0.0.1:" in text
    lines = [line for line in text.splitlines() if line.startswith("[")]
    assert len(lines) == 14 and [line.split("]")[0] for line in lines] == [f"[{n:>3}/14" for n in range(1, 15)]
    assert all("left" in line for line in lines)  # the chief says each trial once, with the global count
    assert {f.name for f in (tmp_path / "dist" / "tuner").glob("tuner*.json")} == {"tuner0.json", "tuner1.json"}
    assert len(trial_states(tmp_path / "dist")) == 14
    run_sweep(load_sweep(tiny), tmp_path / "single", log=lambda *_: None)
    assert chosen(tmp_path / "dist") == chosen(tmp_path / "single")
    assert None not in chosen(tmp_path / "single").values()


@pytest.mark.slow
def test_packed_sweep_trains_each_grid_as_one_model(tiny, tmp_path):
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
    assert None not in chosen(tmp_path / "out").values()


# ---------------------------------------------------------------- integrity: errors, damage, signals


def _trial_dirs(logdir):
    return sorted(p.name for p in Path(logdir, "tuner").glob("trial_*"))


def test_missing_data_fails_before_any_trial_in_one_line(tmp_path, capsys, monkeypatch, debian_dirs):
    from kbn.cli import main

    debian_dirs("mnist", [])
    f = tmp_path / "s.toml"
    f.write_text(TINY)
    assert main(["sweep", str(f), "--logdir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("kbn: error: ")
    assert err.count("kbn: error") == 1 and err.count("\n") <= 2, err  # at most a "trying tfds" line before it
    assert "no data for 'mnist'" in err and "kbn data prepare mnist" in err
    assert _trial_dirs(tmp_path / "out") == []


def test_a_subset_larger_than_the_data_fails_before_any_trial(tiny, tmp_path, capsys):
    from kbn.cli import main

    tiny.write_text(TINY.replace("batch_size = 32", "batch_size = 32\nsubset = 1000000"))
    assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "subset: 1000000 is more than the 256 training examples" in err, err
    assert _trial_dirs(tmp_path / "out") == []


@contextlib.contextmanager
def failing_train(error, when):
    """kbn.tune's train raises `error` for the trials where when(cfg) is true."""
    from kbn import tune

    real = tune.train

    def train(cfg, *a, **k):
        if when(cfg):
            raise error
        return real(cfg, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tune, "train", train)
        yield


@pytest.mark.slow
def test_a_kbn_error_inside_a_trial_stops_the_sweep_and_the_trial_runs_on_resume(tiny, tmp_path, monkeypatch):
    from kbn.errors import DataError

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
def test_a_crashed_trial_is_failed_holds_its_cell_and_is_retried_on_resume(tiny, tmp_path, monkeypatch, capsys):
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
    assert chosen(tmp_path / "out") == chosen(tmp_path / "straight")


def test_a_finished_sweep_with_a_failed_trial_says_so_again_rather_than_finished(tiny, tmp_path, monkeypatch, capsys):
    from kbn.cli import main

    with failing_train(RuntimeError("boom"), lambda cfg: cfg.lr == 1.0):
        assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--workers", "1"]) == 1
        assert "2 failed trial(s)" in capsys.readouterr().out
        assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--workers", "1"]) == 1  # still broken: not finished
    out = capsys.readouterr().out
    assert "finished;" not in out and "failed trial(s)" in out


@pytest.mark.slow
def test_an_unreadable_trial_file_never_makes_ids_collide(tiny, tmp_path):
    out = tmp_path / "out"
    run_sweep(load_sweep(tiny), out, log=lambda *_: None)
    states = trial_states(out)
    victim = out / "tuner" / "trial_0003" / "trial.json"
    victim.write_text(victim.read_text()[:50])  # truncated
    from kbn.cli import main

    assert main(["status", str(out)]) == 0  # reported, not silently dropped
    r = _kbn(["sweep", str(tiny), "--logdir", str(out)])
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
def test_status_names_an_unreadable_trial_file(tiny, tmp_path, capsys):
    from kbn.cli import main

    run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)
    (tmp_path / "out" / "tuner" / "trial_0002" / "trial.json").write_text("{")
    assert main(["status", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "tuner/trial_0002/trial.json is unreadable" in out
    rows = {r[0]: r for r in status_rows(tmp_path / "out", live=False)}
    assert rows["mnist-mlp-none-sgd"][2] == "2/3" and rows["mnist-mlp-none-sgd"][1] != "done"


@pytest.mark.slow
def test_next_trial_id_follows_the_highest_on_disk(tiny, tmp_path):
    from kbn.tune import SweepTuner

    out = tmp_path / "out"
    run_sweep(load_sweep(tiny), out, log=lambda *_: None)
    (out / "tuner" / "trial_0001" / "trial.json").write_text("")
    os.rename(out / "tuner" / "trial_0013", out / "tuner" / "trial_0020")  # a gap: ids are not a count
    tuner = SweepTuner(load_sweep(tiny), out, log=lambda *_: None)
    assert tuner.oracle._next_id == 21


@pytest.mark.slow
def test_a_deleted_sweep_json_is_rebuilt_only_for_the_same_sweep(tiny, tmp_path):
    out = tmp_path / "out"
    run_sweep(load_sweep(tiny), out, log=lambda *_: None)
    (out / "sweep.json").unlink()
    changed = tmp_path / "changed.toml"
    changed.write_text(TINY.replace("epochs = 1", "epochs = 2"))
    with pytest.raises(ConfigError, match="no sweep.json and its runs were made by another sweep .*epochs 1 vs 2"):
        run_sweep(load_sweep(changed), out, log=lambda *_: None)
    changed.write_text(TINY.replace("coarse = [0.01, 0.1, 1.0]", "coarse = [0.001, 0.1, 1.0]"))
    with pytest.raises(ConfigError, match="coarse lr 0.01 is not in this sweep's coarse grid"):
        run_sweep(load_sweep(changed), out, log=lambda *_: None)
    assert not (out / "sweep.json").exists()
    assert run_sweep(load_sweep(tiny), out, log=lambda *_: None) == 0  # the same sweep: accepted
    assert (out / "sweep.json").exists()


@pytest.mark.slow
def test_fault_injection_status_names_each_damage_and_resume_redoes_exactly_those(tiny, tmp_path):
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
    r = _kbn(["sweep", str(tiny), "--logdir", str(bad)])
    text, _ = r.communicate(timeout=300)
    assert r.returncode == 0, text[-3000:]
    redone = sorted(f.parent.name for f, t in stamps.items() if not f.exists() or f.stat().st_mtime_ns != t)
    assert redone == sorted([runs[0].name, runs[1].name])  # exactly the damaged runs were trained again
    assert "problem" not in subprocess.run([sys.executable, "-m", "kbn", "status", str(bad)], cwd=ROOT,
                                           capture_output=True, text=True, timeout=120).stdout
    assert report(bad) == original
    assert main(["status", str(bad)]) == 0


def _wait_for_completed(out, n, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and sum(s["status"] == "COMPLETED" for s in trial_states(out).values()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} trials completed in {timeout} s")


@pytest.mark.parametrize("how", ["SIGINT to the group", "SIGTERM"])
@pytest.mark.slow
def test_a_signal_stops_the_sweep_within_seconds_and_it_resumes(tiny, tmp_path, how):
    out = tmp_path / "out"
    for stop_after in (2, 7):  # early (search) and later (other cells, or final runs)
        p = _kbn(["sweep", str(tiny), "--logdir", str(out)], start_new_session=True)
        _wait_for_completed(out, stop_after, p)
        t0 = time.time()
        if how == "SIGTERM":
            p.send_signal(signal.SIGTERM)
        else:
            os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        text, _ = p.communicate(timeout=60)
        if p.returncode == 0:  # it finished before the signal landed: nothing to check this round
            continue
        assert time.time() - t0 < 15, text[-2000:]
        assert p.returncode == 130, text[-3000:]
        assert "kbn: interrupted; run the same command to resume" in text
        assert "Traceback" not in text and "Exception ignored" not in text
    r = _kbn(["sweep", str(tiny), "--logdir", str(out)])
    text, _ = r.communicate(timeout=300)
    assert r.returncode == 0, text[-3000:]
    assert len(trial_states(out)) == 14 and all(s["status"] == "COMPLETED" for s in trial_states(out).values())
    run_sweep(load_sweep(tiny), tmp_path / "straight", log=lambda *_: None)
    assert chosen(out) == chosen(tmp_path / "straight")


@pytest.mark.slow
def test_sigterm_to_the_chief_stops_its_workers_too(tiny, tmp_path):
    out = tmp_path / "out"
    p = _kbn(["sweep", str(tiny), "--logdir", str(out), "--workers", "2"], start_new_session=True)
    _wait_for_completed(out, 2, p)
    workers = subprocess.run(["pgrep", "-f", "--", f"--logdir {out} --worker( |$)"], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    text, _ = p.communicate(timeout=60)
    assert p.returncode == 130 and time.time() - t0 < 20, text[-3000:]
    assert "kbn: interrupted; run the same command to resume" in text
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", "--", f"--logdir {out} --worker( |$)"], capture_output=True).returncode == 1  # none left
    r = _kbn(["sweep", str(tiny), "--logdir", str(out), "--workers", "2"])
    text, _ = r.communicate(timeout=400)
    assert r.returncode == 0, text[-3000:]
    assert all(s["status"] == "COMPLETED" for s in trial_states(out).values()) and len(trial_states(out)) == 14


@pytest.mark.parametrize("args,expect", [
    (["--workers", "0", "--port", "99999"], "port: got 99999; give a port from 1 to 65535"),
    (["--workers", "0", "--port", "-5"], "port: got -5"),
    (["--oracle", "127.0.0.1:8000"], "--oracle 127.0.0.1:8000: only a worker joins a chief; add --worker"),
    (["--host", "0.0.0.0"], "--host and --port are where a chief serves: add --workers N"),
    (["--port", "8000"], "--host and --port are where a chief serves"),
    (["--worker", "--workers", "2", "--oracle", "127.0.0.1:1"], "--worker and --workers conflict"),
    (["--worker", "--oracle", "127.0.0.1:0"], "oracle: got '127.0.0.1:0'"),
    (["--workers", "0", "--host", "not-a-host"], "host: cannot resolve 'not-a-host'"),
])
def test_sweep_options_that_cannot_work_fail_in_one_line(tiny, tmp_path, capsys, args, expect):
    from kbn.cli import main

    code = main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kbn: error: ") and err.count("\n") == 1, err
    assert expect in err
    assert not (tmp_path / "out" / "tuner").exists()


@pytest.mark.slow
def test_a_worker_with_no_chief_fails_within_bounded_time(tiny, tmp_path):
    env = dict(os.environ, KBN_ORACLE_TIMEOUT="3")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "kbn", "sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--worker",
                        "--oracle", "127.0.0.1:1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and time.time() - t0 < 60
    assert "kbn: error: no kbn chief answers at 127.0.0.1:1 (waited 3 s)" in p.stderr, p.stderr[-2000:]


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


# ---------------------------------------------------------------- answer: selection without reuse


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


def test_search_seeds_must_not_be_final_seeds():
    with pytest.raises(ConfigError, match=r"search.seeds: \[1\] shares \[1\] with seeds \[0, 1\]"):
        sweep_from_dict({"datasets": ["mnist"], "archs": ["mlp"], "norms": ["none"], "optimizers": ["sgd"],
                         "epochs": 1, "seeds": [0, 1], "search": {"seeds": [1]}})


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
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["search_seeds"] == [2]


def test_the_eta_weighs_each_trial_by_its_length():
    from kbn.plan import trial_length, work_left

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


# ---------------------------------------------------------------- found by trying bad inputs by hand


def test_more_workers_than_the_memory_holds_fail_before_any_starts(tiny, tmp_path, capsys):
    from kbn.cli import main

    assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--workers", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workers: 100000 local workers need about" in err and "kbn would choose" in err


def test_a_batch_larger_than_the_training_set_fails_before_any_trial(tiny, tmp_path, capsys):
    from kbn.cli import main

    tiny.write_text(TINY.replace("batch_size = 32", "batch_size = 5000"))
    assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--workers", "1"]) == 2
    assert "batch_size: 5000 is more than the 256 training examples" in capsys.readouterr().err


@pytest.mark.parametrize("change,expect", [
    ("epochs = 1\neval_every_steps = 50\ntotal_steps = 20", "eval_every_steps: 50 is more than total_steps 20"),
    ("epochs = 1\n[search]\nepochs = 5", "search.epochs: 5 is longer than the final runs' 1 epochs"),
    ("epochs = 1\n[search.coarse_by_optimizer]\nadam = [0.1]", "'adam' is not among this sweep's optimizers (sgd)"),
])
def test_sweep_settings_that_cannot_mean_what_they_say(tmp_path, change, expect):
    f = tmp_path / "s.toml"
    f.write_text('datasets = ["mnist"]\narchs = ["mlp"]\nnorms = ["none"]\noptimizers = ["sgd"]\n' + change + "\n")
    with pytest.raises(ConfigError) as e:
        load_sweep(f)
    assert expect in str(e.value) and "\n" not in str(e.value)
