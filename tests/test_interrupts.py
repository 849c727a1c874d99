"""kbn.core.interrupts: Ctrl-C and SIGTERM set a flag that training checks between steps (real signals to
this process and to child processes); a stopped sweep resumes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from kbn.core import interrupts
from kbn.core.config import load_sweep
from kbn.core.errors import Interrupted
from kbn.sweep.runner import run_sweep


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sets_the_flag_and_check_raises(signals_to_kbn, sig):
    assert not interrupts.requested()
    interrupts.check()  # nothing asked: nothing raised
    os.kill(os.getpid(), sig)
    assert interrupts.requested()
    with pytest.raises(Interrupted, match="interrupted; run the same command to resume") as e:
        interrupts.check()
    assert e.value.exit_code == 130


def test_install_forgets_an_earlier_stop(signals_to_kbn):
    os.kill(os.getpid(), signal.SIGTERM)
    interrupts.install()
    assert not interrupts.requested()


def test_sleep_ends_early_on_a_signal(signals_to_kbn):
    t0 = time.monotonic()
    interrupts.sleep(0.05)  # no signal: sleeps its time and returns
    assert time.monotonic() - t0 >= 0.05
    os.kill(os.getpid(), signal.SIGINT)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        interrupts.sleep(30)
    assert time.monotonic() - t0 < 1


TWICE = """
import os, signal, sys, time
from kbn.core import interrupts
interrupts.install()
os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.2)
print("still here", interrupts.requested(), flush=True)
"""


@pytest.mark.parametrize("chief,code,said", [
    (None, 130, "kbn: interrupted again; stopping now"),  # a second stop exits at once
    ("1", 0, "still here True"),  # a chief's worker hears one Ctrl-C twice: the same stop
])
def test_a_second_signal_exits_at_once_unless_it_is_the_same_stop(chief, code, said):
    env = {k: v for k, v in os.environ.items() if k != "KBN_CHIEF_PID"}
    if chief:
        env["KBN_CHIEF_PID"] = chief
    p = subprocess.run([sys.executable, "-c", TWICE], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == code, p.stderr[-2000:]
    assert said in p.stdout + p.stderr


@pytest.mark.parametrize("how", ["SIGINT to the group", "SIGTERM"])
@pytest.mark.slow
def test_a_signal_stops_the_sweep_within_seconds_and_it_resumes(tiny, tmp_path, how, trial_states, chosen_lrs, kbn_process, wait_for_completed):
    out = tmp_path / "out"
    for stop_after in (2, 7):  # early (search) and later (other cells, or final runs)
        p = kbn_process(["sweep", str(tiny), "--logdir", str(out)], start_new_session=True)
        wait_for_completed(out, stop_after, p)
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
    r = kbn_process(["sweep", str(tiny), "--logdir", str(out)])
    text, _ = r.communicate(timeout=300)
    assert r.returncode == 0, text[-3000:]
    assert len(trial_states(out)) == 14 and all(s["status"] == "COMPLETED" for s in trial_states(out).values())
    run_sweep(load_sweep(tiny), tmp_path / "straight", log=lambda *_: None)
    assert chosen_lrs(out) == chosen_lrs(tmp_path / "straight")
