"""One sweep over several processes or machines: Keras Tuner's chief/worker mode. The chief serves
the oracle over gRPC (`serve`), starts local worker processes, each pinned to its own cores when
kbn chose how many (`auto_workers`, `check_workers`), reports their trials as they end
(`ChiefProgress`) and stops them; a worker (`run_worker`) trains the trials a chief named by Keras
Tuner's environment hands it. It moves trials between processes: it must not know what the oracle
hands out or how a trial trains (kbn.sweep.tuner), nor the sweep folder's files (kbn.sweep.folder).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from kbn.core import compat, console, interrupts
from kbn.core.clock import Pace
from kbn.core.config import SweepConfig
from kbn.core.errors import ConfigError, KbnError
from kbn.training.backend import default_pack, is_conv
from kbn.sweep.oracle import SweepOracle, trial_metrics
from kbn.sweep.plan import COMPLETED, FAILED, planned_trials, trial_length, work_left
from kbn.sweep.tuner import SweepTuner, announce, preflight, progress_line, write_summary


class ChiefProgress:
    """The chief's view of a sweep that its workers train: a progress line per trial as it ends, with
    the same global count and length-weighted ETA as a one-process sweep (workers started by the
    chief stay quiet, so each trial is said once)."""

    def __init__(self, sweep: SweepConfig, oracle: SweepOracle, log, workers: int = 1):
        self.sweep, self.oracle, self.log, self.workers = sweep, oracle, log, workers
        self.seen = {tid for tid, t in oracle.trials.items() if t.status in (COMPLETED, FAILED)}
        self.done0, self.t0, self.pace = len(self.seen), time.perf_counter(), Pace()

    def poll(self) -> None:
        """A progress line for each trial that ended since the last poll."""
        ended, progress = self.oracle.ended_since(self.seen)
        for t in ended:
            self.seen.add(t.trial_id)
            self.pace.work += trial_length(self.sweep, t.hyperparameters.values["phase"])
            took = time.time() - self.oracle.started.get(t.trial_id, time.time())
            metrics = trial_metrics(t) if t.status == COMPLETED else None
            self.pace.ended(took, (metrics or {}).get("compile_time") or 0.0)
            elapsed = time.perf_counter() - self.t0
            planned = planned_trials(self.sweep, progress)
            # the workers training at once (remote ones too), no more than the trials left to share
            self.workers = max(self.workers, len({tid.split("+")[0] for tid in list(self.oracle.ongoing_trials)}))
            left = self.pace.left(work_left(self.sweep, progress), min(self.workers, max(planned - len(self.seen), 1)))
            self.log(progress_line(self.sweep, t, metrics, len(self.seen), planned, took, elapsed, left))
        if any(t.hyperparameters.values["phase"] == "final" for t in ended):  # a cell's final runs may have finished
            write_summary(compat.oracle_project_dir(self.oracle).parent, self.log)


def set_distribution_env(tuner_id: str | None, host: str | None = None, port: int | None = None):
    """Keras Tuner's distribution environment for this process: the chief's or a worker's
    (`tuner_id`, and the chief's address), or none (None: the process trains alone)."""
    for k in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        os.environ.pop(k, None)
    if tuner_id is not None:
        os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port))


def auto_workers(sweep: SweepConfig, datasets: dict, pack: int):
    """kbn.sweep.resources' choice for this sweep on this machine."""
    from kbn.sweep import resources

    conv = any(is_conv(a) for a in sweep.archs)
    biggest = _dataset_bytes(datasets)
    parallel = max(len(sweep.cells()) * len(sweep.coarse) * len(sweep.search_seeds), len(sweep.cells()) * len(sweep.seeds))
    return resources.choose_workers(resources.this_machine(gpu=pack > 1), conv, biggest, parallel)


def check_workers(workers: int, sweep: SweepConfig, datasets: dict, pack: int) -> None:
    """An explicit --workers N that the memory cannot hold fails before any process starts (1000
    workers on a 2-core machine once took the whole machine down)."""
    from kbn.sweep import resources

    machine = resources.this_machine()
    biggest = _dataset_bytes(datasets)
    fits = resources.memory_capacity(machine, biggest)
    if workers > fits:
        need = workers * resources.worker_bytes(biggest) / 2**30
        raise ConfigError(f"workers: {workers} local workers need about {need:.0f} GiB; {machine.memory / 2**30:.1f} "
                          f"GiB is available, enough for {fits} (kbn would choose "
                          f"{auto_workers(sweep, datasets, pack).workers}); give fewer, or leave --workers out")


def _dataset_bytes(datasets: dict) -> float:
    return max(sum(getattr(ds, f"x_{s}").nbytes for s in ("train", "validation", "test")) for ds in datasets.values())


ORACLE_TIMEOUT = 60  # seconds a worker waits for its chief, unless KBN_ORACLE_TIMEOUT says


def oracle_timeout() -> float:
    """KBN_ORACLE_TIMEOUT (seconds a worker waits for its chief), else ORACLE_TIMEOUT; ConfigError if bad."""
    text = os.environ.get("KBN_ORACLE_TIMEOUT")
    if text is None:
        return ORACLE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"KBN_ORACLE_TIMEOUT: got {text!r}; give the seconds a worker waits for its chief, a "
                          f"positive number (default {ORACLE_TIMEOUT}), or unset it")
    return value


def run_worker(sweep: SweepConfig, logdir: Path, log=console.say, pack: int | None = None) -> int:
    """A worker: Keras Tuner's env (KERASTUNER_TUNER_ID / _ORACLE_IP / _ORACLE_PORT) names the chief.
    Returns the number of trials that failed here (the chief reports them too)."""
    import grpc

    for k in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        if not os.environ.get(k):
            raise ConfigError(f"--worker needs {k} in the environment (or --oracle HOST:PORT)")
    if "chief" in os.environ["KERASTUNER_TUNER_ID"]:
        raise ConfigError("KERASTUNER_TUNER_ID: a worker's id must not contain 'chief'")
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    _die_with_local_chief()
    _same_precision(sweep, logdir)
    # keras-tuner's client waits up to an hour for a chief that is not there: ask once, boundedly
    try:
        timeout = oracle_timeout()
        grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise KbnError(f"no kbn chief answers at {address} (waited {timeout:g} s); start it with "
                       "kbn sweep FILE --workers N --host H --port P, or check the address") from None
    pack = pack or default_pack()
    local = bool(os.environ.get("KBN_CHIEF_PID"))  # the chief that started it says each trial
    tuner = SweepTuner(sweep, logdir, log=log, pack=pack, datasets=preflight(sweep, pack, verbose=not local),
                       verbose=not local)
    try:
        return tuner.search()
    except grpc.RpcError as e:
        raise KbnError(f"lost the chief at {address} ({e.code().name}); run the worker again once it is back") from None


def _same_precision(sweep: SweepConfig, logdir: Path) -> None:
    """A worker trains at the precision the chief recorded (its --precision may override the file's)."""
    from kbn.sweep.folder import SWEEP_FILE, stored_sweep

    if (Path(logdir) / SWEEP_FILE).is_file():
        theirs = stored_sweep(logdir).get("precision", "float32")
        if theirs != sweep.precision:
            raise ConfigError(f"precision: {logdir} is a sweep at {theirs}, and this worker would train at "
                              f"{sweep.precision}; give --precision {theirs}")


def _die_with_local_chief() -> None:
    """A local worker ends when its chief does, even by kill -9 and even mid-trial: otherwise it would
    wait on the gone chief's gRPC calls (up to an hour) holding a core, and a resume would run beside
    it. Two ways, so that it holds whatever process started the worker: Linux's parent-death signal,
    SIGKILL (a SIGTERM would only ask the worker to stop between steps, which a worker blocked in a gRPC
    call never reaches), when the chief is the parent; and a lifeline, a thread that waits on the pipe
    whose other end only the chief holds (KBN_CHIEF_FD; the chief's pid where there is none) and ends
    the process the moment it closes. Files are written atomically: the trial cut short runs again on
    resume."""
    chief = os.environ.get("KBN_CHIEF_PID")
    if not chief:
        return
    chief = int(chief)
    if sys.platform.startswith("linux") and os.getppid() == chief:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    fd = os.environ.get("KBN_CHIEF_FD")
    threading.Thread(target=_lifeline, args=(chief, int(fd) if fd else None), daemon=True,
                     name="kbn-lifeline").start()


def _lifeline(chief: int, fd: int | None) -> None:
    if fd is not None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:  # not a pipe from the chief (a bad KBN_CHIEF_FD): watch the pid instead
            fd = None
    if fd is None:
        while _alive(chief):
            time.sleep(0.5)
    console.warn(f"kbn worker: its chief (pid {chief}) is gone; stopping (the trial cut short runs again on resume)")
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a dead chief its own parent has not reaped yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(sweep, logdir, sweep_file, workers, host, port, log, pack, datasets, cores_each=None) -> int:
    """The chief serves the oracle (Keras Tuner's gRPC service) and starts `workers` local workers, each
    pinned to its own cores when kbn chose their number; more may join from other machines. A local
    worker that stops with an error (or Ctrl-C / SIGTERM here) stops the whole sweep, resumable."""
    import grpc
    from concurrent import futures
    from kbn.core import compat  # keras-tuner's gRPC service: no public path to it

    port = port or _free_port(host)
    set_distribution_env("chief", host, port)
    tuner = SweepTuner(sweep, logdir, log=log, datasets=datasets)
    oracle = tuner.oracle
    announce(sweep, logdir, oracle, log)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    compat.add_oracle_service(server, oracle)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound != port:
        raise ConfigError(f"port: cannot listen on {host}:{port} (in use?); give another --port or leave it out")
    server.start()
    log(f"kbn sweep: chief serving the oracle on {host}:{port}; starting {workers} local worker(s) (each loads "
        "Keras and the data, then compiles: a line per trial as each ends)")
    procs = []
    lifeline, chief_end = os.pipe()  # the workers' lifeline: it closes when this process ends, however it ends
    try:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        for i in range(workers):
            env = dict(os.environ, KERASTUNER_TUNER_ID=f"tuner{i}", KERASTUNER_ORACLE_IP=host,
                       KERASTUNER_ORACLE_PORT=str(port), KBN_CHIEF_PID=str(os.getpid()),
                       KBN_CHIEF_FD=str(lifeline))
            if cores_each and len(cpus) >= workers * cores_each:
                env["KBN_WORKER_CPUS"] = ",".join(map(str, cpus[i * cores_each:(i + 1) * cores_each]))
            cmd = [sys.executable, "-m", "kbn", "sweep", sweep_file, "--logdir", str(logdir), "--worker"]
            cmd += ["--pack", str(pack)] if pack else []
            cmd += ["--precision", sweep.precision]  # the chief's (--precision may override the file's)
            procs.append(subprocess.Popen(cmd, env=env, pass_fds=(lifeline,)))
        os.close(lifeline)
        lifeline = None
        progress = ChiefProgress(sweep, oracle, log, workers)
        while not oracle.finished():
            interrupts.sleep(0.5)
            progress.poll()
            oracle.check_writes()  # the sweep folder turned read-only (or full): one line, resumable
            stopped = [(i, p.returncode) for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if stopped:
                raise KbnError(f"worker tuner{stopped[0][0]} stopped with exit code {stopped[0][1]} (its "
                               "message is above); the sweep stopped; run the same command to resume")
            if procs and all(p.poll() is not None for p in procs) and not oracle.finished():
                raise KbnError("all workers exited before the sweep finished; run the same command to resume")
        progress.poll()
        for p in procs:
            p.wait(timeout=120)
    finally:
        _stop(procs)
        for fd in (lifeline, chief_end):
            if fd is not None:
                os.close(fd)
        server.stop(grace=2)
        set_distribution_env(None)
    return len(oracle.failed())


def _stop(procs, grace: float = 10.0) -> None:
    """SIGTERM to local workers still running (they stop between steps), SIGKILL after `grace` s."""
    deadline = time.monotonic() + grace
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
