"""examples/slurm/sweep.sbatch without Slurm: array task 0 (the chief) and task 1 (a worker) as two
local bash processes over one shared folder."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kbn.core.config import load_sweep
from kbn.sweep.status import folder_progress

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "slurm" / "sweep.sbatch"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _task(task_id, tiny, shared, port, **env):
    env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task_id), SLURM_ARRAY_JOB_ID="4242", PYTHONPATH=str(ROOT),
               KBN=f"{sys.executable} -m kbn", KBN_CHIEF_ADDR="127.0.0.1", KBN_POLL="1", **env)
    return subprocess.Popen(["bash", str(SCRIPT), str(tiny), str(shared), str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the sbatch script is a bash script")
@pytest.mark.slow
def test_the_slurm_script_runs_a_chief_and_a_worker_over_a_shared_folder(tiny, tmp_path):
    shared, port = tmp_path / "shared", _free_port()
    procs = []
    try:
        procs.append(_task(1, tiny, shared, port))  # a worker first: it waits for the chief's address
        procs.append(_task(0, tiny, shared, port))
        worker_out, _ = procs[0].communicate(timeout=400)
        chief_out, _ = procs[1].communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert procs[1].returncode == 0, chief_out[-3000:]
    assert procs[0].returncode == 0, worker_out[-3000:]
    assert "--workers 0" in chief_out and "chief serving the oracle on 0.0.0.0:" in chief_out
    assert f"--oracle 127.0.0.1:{port}" in worker_out
    trials = [json.loads(p.read_text()) for p in (shared / "tuner").glob("trial_*/trial.json")]
    assert len(trials) == 14 and all(t["status"] == "COMPLETED" for t in trials)
    assert (shared / "tuner" / "tuner1.json").exists()  # the worker trained (the chief trains nothing)
    assert None not in {p["chosen"] for p in folder_progress(shared).progress.values()}
    assert len(list((shared / "runs").glob("*/model.keras"))) == 2 * len(load_sweep(tiny).seeds)
    assert not (shared / "slurm-4242.chief").exists()  # the address goes once the chief is done
    assert (shared / "slurm-4242.done").read_text().strip() == "0"


@pytest.mark.skipif(shutil.which("bash") is None, reason="the sbatch script is a bash script")
@pytest.mark.slow
def test_a_worker_whose_chief_never_comes_gives_up_in_bounded_time(tiny, tmp_path):
    p = _task(1, tiny, tmp_path / "shared", _free_port(), KBN_CHIEF_WAIT="2")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1 and "no chief" in out, out
