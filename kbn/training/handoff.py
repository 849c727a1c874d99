"""A convolutional network met by a JAX process on a CPU trains in a TensorFlow child process.

The CLI chooses TensorFlow for conv nets before Keras is imported (kbn.training.backend's
choose_backend). A program that imported Keras on JAX (a notebook calling `kbn.train`, `kbn.run_sweep`) cannot switch:
Keras picks its backend once per process. There a conv net would train through JAX's `fit`, 3-4x
slower than TensorFlow's oneDNN convolutions on a CPU (README, "Backends and speed"; XLA's CPU
convolutions, jax-ml/jax#12868). So `train_many` hands such runs to a child on TensorFlow
(kbn.training.backend's `handoff_wanted` decides, `train_in_tensorflow` does it): the same runs,
the same folders and logs, its progress lines passed through kbn's log, a KbnError raised here as it
was there, and Ctrl-C stopping both between steps. The run's config.json and first line say it was
handed over, and why.
It must not know sweeps or reports: a list of runs in, their results out.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from kbn.core import console

OFF = "KBN_HANDOFF"  # =off: train conv nets in this JAX process (Keras's fit), as before
HANDED = "KBN_HANDED_FROM"  # set in the child: the backend of the process that handed the runs over
WHY = "KBN_HANDOFF_WHY"  # ... and why


def received(path: dict) -> dict:
    """In the child: its path with where the runs came from and why ("handed_from", the reason)."""
    if not os.environ.get(HANDED):
        return path
    return {**path, "handed_from": os.environ[HANDED],
            "reason": f"{path['reason']}; handed over by a {os.environ[HANDED].upper()} process: "
                      f"{os.environ.get(WHY, '')}"}


_CHILD = """
import sys
from kbn.training import handoff
from kbn.core.startup import start_tensorflow
start_tensorflow()  # before Keras imports it: its C++ start-up lines into a file
from kbn.training import train
sys.exit(handoff.child(sys.argv[1], sys.argv[2], train.train_many))
"""


def train_in_tensorflow(why: str, log=console.say, **train_many_args) -> list:
    """kbn.training.train's train_many(**train_many_args) in a child on TensorFlow; its RunResults. The child's
    stdout lines go through `log`, its stderr to this process's stderr."""
    with tempfile.TemporaryDirectory(prefix="kbn-handoff-") as tmp:
        given, back = Path(tmp) / "runs.pkl", Path(tmp) / "results.pkl"
        with open(given, "wb") as f:
            pickle.dump(train_many_args, f, protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ, KERAS_BACKEND="tensorflow", **{HANDED: "jax"}, COLUMNS="1000",
                   **{WHY: why}, KBN_CHIEF_PID=str(os.getpid()))  # one Ctrl-C heard twice: one stop
        env["PYTHONPATH"] = os.pathsep.join([p for p in [os.getcwd(), *sys.path] if p])
        rc = _run([sys.executable, "-c", _CHILD, str(given), str(back)], env, log)
        if not back.exists():
            raise RuntimeError(f"the TensorFlow process training {train_many_args['cfgs'][0].run_name()} ended with "
                               f"exit code {rc} and no result (its messages are above); {OFF}=off trains it here")
        with open(back, "rb") as f:
            out = pickle.load(f)
    if "error" in out:
        raise out["error"]
    return out["results"]


def _run(cmd: list, env: dict, log) -> int:
    """The child to its end, its stdout lines through `log` as they come. A KeyboardInterrupt here (a
    notebook's interrupt reaches this process only) is passed on as SIGINT: the child stops between
    steps and says so, as it would have with the terminal's Ctrl-C."""
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    err = threading.Thread(target=_copy, args=(child.stderr,), daemon=True)
    err.start()
    try:
        for line in child.stdout:
            log(line.rstrip("\n"))
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        child.wait()
        raise
    finally:
        err.join(timeout=5)


def _copy(stream) -> None:
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()


def child(given: str, back: str, train_many) -> int:
    """The child's side: the runs trained on TensorFlow by `train_many` (kbn.training.train's, passed
    in: this module sits below it); their results, or the KbnError that stopped them, pickled to `back`."""
    from kbn.core import interrupts
    from kbn.core.errors import KbnError

    interrupts.install()
    with open(given, "rb") as f:
        args = pickle.load(f)
    try:
        out = {"results": train_many(**args)}
    except KbnError as e:
        out = {"error": e}
    tmp = Path(back).with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(out, f)
    os.replace(tmp, back)
    return 0
