"""kbn.sweep.distribute: one sweep over a chief and its worker processes (Keras Tuner's chief/worker mode,
on loopback here)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kbn.core.config import load_sweep
from kbn.sweep.distribute import set_distribution_env
from kbn.sweep.runner import run_sweep

ROOT = Path(__file__).resolve().parents[1]
KT_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def test_a_process_joins_its_chief_through_keras_tuners_environment(monkeypatch):
    for k in KT_ENV:
        monkeypatch.setenv(k, "stale")  # left by a parent process: never inherited by mistake
    set_distribution_env("tuner3", "10.0.0.7", 8123)
    assert [os.environ[k] for k in KT_ENV] == ["tuner3", "10.0.0.7", "8123"]
    set_distribution_env("chief", "127.0.0.1", 9000)
    assert [os.environ[k] for k in KT_ENV] == ["chief", "127.0.0.1", "9000"]
    set_distribution_env(None)  # training alone
    assert not any(k in os.environ for k in KT_ENV)


@pytest.mark.slow
def test_two_workers_on_loopback_choose_the_same_learning_rates(tiny, tmp_path, trial_states, chosen_lrs, kbn_process,
                                                               progress_times):
    p = kbn_process(["sweep", str(tiny), "--logdir", str(tmp_path / "dist"), "--workers", "2"])
    text, _ = p.communicate(timeout=400)
    assert p.returncode == 0, text[-3000:]
    assert "chief serving the oracle on 127.0.0.1:" in text
    lines = [line for line in text.splitlines() if line.startswith("[")]
    assert len(lines) == 14 and [line.split("]")[0] for line in lines] == [f"[{n:>2}/14" for n in range(1, 15)]
    assert all("left" in line for line in lines)  # the chief says each trial once, with the global count
    # the ETA learns from the trials' own training seconds, shared by the two workers: not from the
    # elapsed time, which holds the workers' start and their first compilations
    (first, eta), end = progress_times(lines)[0], progress_times(lines)[-1][0]
    assert eta <= 2 * (end - first) + 3, lines
    assert {f.name for f in (tmp_path / "dist" / "tuner").glob("tuner*.json")} == {"tuner0.json", "tuner1.json"}
    assert len(trial_states(tmp_path / "dist")) == 14
    run_sweep(load_sweep(tiny), tmp_path / "single", log=lambda *_: None)
    assert chosen_lrs(tmp_path / "dist") == chosen_lrs(tmp_path / "single")
    assert None not in chosen_lrs(tmp_path / "single").values()


@pytest.mark.slow
def test_sigterm_to_the_chief_stops_its_workers_too(tiny, tmp_path, trial_states, kbn_process, wait_for_completed):
    out = tmp_path / "out"
    p = kbn_process(["sweep", str(tiny), "--logdir", str(out), "--workers", "2"], start_new_session=True)
    wait_for_completed(out, 2, p)
    workers = subprocess.run(["pgrep", "-f", "--", f"--logdir {out} --worker( |$)"], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    text, _ = p.communicate(timeout=60)
    assert p.returncode == 130 and time.time() - t0 < 20, text[-3000:]
    assert "kbn: interrupted; run the same command to resume" in text
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", "--", f"--logdir {out} --worker( |$)"], capture_output=True).returncode == 1  # none left
    r = kbn_process(["sweep", str(tiny), "--logdir", str(out), "--workers", "2"])
    text, _ = r.communicate(timeout=400)
    assert r.returncode == 0, text[-3000:]
    assert all(s["status"] == "COMPLETED" for s in trial_states(out).values()) and len(trial_states(out)) == 14


@pytest.mark.slow
def test_a_worker_with_no_chief_fails_within_bounded_time(tiny, tmp_path):
    env = dict(os.environ, KBN_ORACLE_TIMEOUT="3")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "kbn", "sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--worker",
                        "--oracle", "127.0.0.1:1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and time.time() - t0 < 60
    assert "kbn: error: no kbn chief answers at 127.0.0.1:1 (waited 3 s)" in p.stderr, p.stderr[-2000:]


def test_more_workers_than_the_memory_holds_fail_before_any_starts(tiny, tmp_path, capsys):
    from kbn.cli import main

    assert main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--workers", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workers: 100000 local workers need about" in err and "kbn would choose" in err


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


SMALL = """
name = "small"
datasets = ["mnist"]
archs = ["mlp"]
norms = ["none"]
optimizers = ["sgd"]
epochs = 1
seeds = [0]
batch_size = 32
[search]
coarse = [0.01, 0.1]
fine_per_side = 1
"""


def _local_workers(out) -> list:
    """The live (not zombie) local workers of the sweep in `out`."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if "--worker" in cmd and str(out) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


@pytest.mark.slow
def test_kill_9_of_the_chief_mid_trial_ends_its_workers_within_seconds(tmp_path, kbn_process, wait_for_completed,
                                                                        trial_states):
    from conftest import write_cache

    write_cache()
    (tmp_path / "small.toml").write_text(SMALL)
    out = tmp_path / "out"
    p = kbn_process(["sweep", str(tmp_path / "small.toml"), "--logdir", str(out), "--workers", "2"],
                    start_new_session=True)
    wait_for_completed(out, 1, p)  # the other worker is in the middle of its trial
    assert len(_local_workers(out)) == 2
    p.kill()
    p.wait()
    t0 = time.time()
    while _local_workers(out) and time.time() - t0 < 30:
        time.sleep(0.1)
    assert not _local_workers(out) and time.time() - t0 < 4, f"a worker outlived its chief by {time.time() - t0:.1f} s"
    r = kbn_process(["sweep", str(tmp_path / "small.toml"), "--logdir", str(out), "--workers", "2"])
    text, _ = r.communicate(timeout=300)
    assert r.returncode == 0, text[-3000:]
    states = trial_states(out)
    assert len(states) == 5 and all(s["status"] == "COMPLETED" for s in states.values())


@pytest.mark.slow
def test_a_trial_that_crashes_on_a_local_worker_keeps_its_reason(tmp_path, kbn_process, trial_states):
    from conftest import write_cache

    write_cache()
    picky = SMALL.replace('["sgd"]', '["tests.user_parts:picky_sgd"]').replace("fine_per_side = 1", "fine_per_side = 0")
    (tmp_path / "picky.toml").write_text(picky)
    out = tmp_path / "out"
    p = kbn_process(["sweep", str(tmp_path / "picky.toml"), "--logdir", str(out), "--workers", "2"])
    text, _ = p.communicate(timeout=300)
    assert p.returncode == 1, text[-3000:]
    failed = [line for line in text.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "FAILED: RuntimeError: picky_sgd refuses lr 0.1 (traceback in tuner/trial_" in failed[0], text
    (state,) = [s for s in trial_states(out).values() if s["status"] == "FAILED"]
    assert state["message"].startswith("RuntimeError: picky_sgd refuses lr 0.1\nTraceback")
    assert "kbn_failure" not in state["hyperparameters"]["values"]  # the message's carrier is gone
    assert "failed: RuntimeError: picky_sgd refuses lr 0.1; retried on resume" in text  # the status table's list


def _chmod_tree(root: Path, writable: bool) -> None:
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in dirs + files)]:
            mode = os.stat(name).st_mode
            os.chmod(name, mode | 0o200 if writable else mode & ~0o222)


@pytest.mark.slow
def test_a_sweep_folder_that_turns_read_only_stops_the_sweep_in_one_line_and_resumes(tmp_path, wait_for_completed,
                                                                                    trial_states):
    from conftest import write_cache

    scratch = tmp_path
    write_cache()
    (scratch / "small.toml").write_text(SMALL)
    out = scratch / "out"
    # tests run as root, which chmod a-w does not stop: tests/as_user gives the processes the EACCES an
    # unprivileged user gets (a real chmod; only root's bypass taken away)
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests' / 'as_user'}{os.pathsep}{ROOT}", KBN_TEST_AS_USER=str(out))
    cmd = [sys.executable, "-m", "kbn", "sweep", str(scratch / "small.toml"), "--logdir", str(out),
           "--workers", "2"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        wait_for_completed(out, 1, p)
        _chmod_tree(out, writable=False)
        text, _ = p.communicate(timeout=180)  # a loaded machine: the chief and two workers wind down
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        _chmod_tree(out, writable=True)
    lines = [line for line in text.splitlines() if "cannot write" in line]
    assert p.returncode not in (0, None) and lines, text[-3000:]
    assert str(out) in lines[0] and "Permission denied" in lines[0] and "resume" in lines[0], lines
    assert "Traceback" not in text and "lost the chief" not in text, text[-3000:]
    time.sleep(1)
    assert not _local_workers(out)
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    states = trial_states(out)
    assert len(states) == 5 and all(s["status"] == "COMPLETED" for s in states.values())


def test_a_worker_at_another_precision_than_the_sweeps_is_refused(tiny, tmp_path, monkeypatch, capsys):
    """The chief's --precision is in sweep.json: a worker started from the bare file (float32) must not
    train a mixed_bfloat16 sweep's trials in float32. Refused before it asks the chief for a trial."""
    from kbn.cli import main
    from kbn.sweep.folder import prepare_folder

    import dataclasses

    for k in KT_ENV:  # the worker sets them for this process: put back afterwards (a leak makes later
        monkeypatch.delenv(k, raising=False)  # tests' tuners Keras Tuner's clients of a chief that is not there)
    (tmp_path / "out").mkdir()
    prepare_folder(dataclasses.replace(load_sweep(tiny), precision="mixed_bfloat16"), tmp_path / "out")
    code = main(["sweep", str(tiny), "--logdir", str(tmp_path / "out"), "--worker", "--oracle", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "precision" in err and "mixed_bfloat16" in err and "--precision mixed_bfloat16" in err
