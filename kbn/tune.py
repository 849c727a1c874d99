"""The sweep: per cell, a coarse learning-rate grid, a fine grid around its winner, then the chosen
learning rate trained once per seed — all as trials of one Keras Tuner project.

Every step of every cell is a Keras Tuner trial with hyperparameters {cell, phase, lr, seed}, handed out
by `SweepOracle`. The oracle keeps no plan of its own: what is left to do is derived from the trials
on disk each time it is asked, which is what makes a sweep resumable after `kill -9` (keras-tuner
1.4.8's own GridSearchOracle is not: keras-team/keras-tuner#1055) and lets Keras Tuner's chief/worker
mode spread one sweep over several processes or machines. Files are written atomically.

Folder of a sweep (`logs/<name>/` by default):
  sweep.json          the validated sweep file; resuming with a different one is refused
  tuner/              the Keras Tuner project: oracle.json, trial_NNNN/trial.json
  search/coarse|fine/ the search trials, each a full kbn run folder (metrics.csv, TensorBoard, HParams)
  runs/               the final runs, one per seed: what reports read
  .lock               held by the live sweep: a second one on the same folder is refused
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import glob
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras_tuner as kt
from keras_tuner.src.engine import base_tuner
from keras_tuner.src.engine import trial as trial_module

from kbn import data as kdata
from kbn.config import SweepConfig
from kbn.errors import ConfigError, KbnError
from kbn.plan import trial_key, cell_progress, planned_trials
from kbn.runlog import write_json_atomic
from kbn.train import train

Status = trial_module.TrialStatus
ENDED = (Status.COMPLETED, Status.FAILED)


class SweepBusy(KbnError):
    """Another live sweep holds the folder."""


# ---------------------------------------------------------------- Keras Tuner pieces


def _atomic_json(path: str, state: dict) -> None:
    write_json_atomic(Path(path), state)


class SweepOracle(kt.Oracle):
    """Hands out the sweep's trials; the remaining work is always derived from the ended trials."""

    def __init__(self, sweep: SweepConfig):
        # Divergence is a result (chance accuracy), never a failure; real crashes must not stop
        # a long sweep either, so the consecutive-failure limit is effectively off.
        super().__init__(objective=kt.Objective("score", "max"), max_trials=None,
                         max_consecutive_failed_trials=10**9)
        self.sweep = sweep

    def scores(self) -> dict[tuple, float]:
        return {trial_key(t.hyperparameters.values): (-math.inf if t.score is None or math.isnan(t.score) else t.score)
                for t in self.trials.values() if t.status in ENDED and "cell" in t.hyperparameters.values}

    def progress(self) -> dict[str, dict]:
        scores = self.scores()
        return {c.key: cell_progress(self.sweep, c, scores) for c in self.sweep.cells()}

    def populate_space(self, trial_id):
        busy = {trial_key(t.hyperparameters.values) for t in self.ongoing_trials.values()}
        for prog in self.progress().values():
            for item in prog["todo"]:
                if trial_key(item) not in busy:
                    return {"status": Status.RUNNING, "values": item}
        if self.ongoing_trials:  # others still run trials whose results decide what comes next
            return {"status": Status.IDLE, "values": None}
        return {"status": Status.STOPPED, "values": None}

    @kt.synchronized  # called from the chief's own thread while gRPC threads change the trials
    def finished(self) -> bool:
        return not self.ongoing_trials and not any(p["todo"] for p in self.progress().values())

    def score_trial(self, trial):
        trial.score = trial.metrics.get_last_value("score")
        trial.best_step = 0

    # Atomic writes: a kill -9 at any moment never leaves a torn JSON file behind.
    def save(self):
        _atomic_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        _atomic_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())

    def reload(self):
        """Rebuild the state from the trial files alone: ended trials stay ended; a trial that was
        running when the sweep died is queued to run again under its own id."""
        self.trials = {}
        for fname in sorted(glob.glob(os.path.join(self._project_dir, "trial_*", "trial.json"))):
            try:
                t = trial_module.Trial.load(fname)
            except (OSError, ValueError, KeyError):
                continue
            self.trials[t.trial_id] = t
        ids = sorted(self.trials)
        self.start_order = list(ids)
        self.end_order = [i for i in ids if self.trials[i].status in ENDED]
        self.ongoing_trials = {}
        self.tuner_ids = set()
        self._run_times = collections.defaultdict(int)
        # create_trial pops from the end: reversed, so interrupted trials rerun in id order.
        self._retry_queue = [i for i in reversed(ids) if self.trials[i].status not in ENDED]
        self._tried_so_far = set()
        self._id_to_hash = collections.defaultdict(lambda: None)


class SweepTuner(base_tuner.BaseTuner):
    """Runs the trials the oracle hands out: each one is a `kbn.train` run."""

    def __init__(self, sweep: SweepConfig, logdir: str | Path, verbose: bool = True, log=print):
        self.sweep, self.logdir, self.verbose, self.log = sweep, Path(logdir), verbose, log
        self.cells = {c.key: c for c in sweep.cells()}
        self._datasets: dict = {}
        oracle = SweepOracle(sweep)
        oracle.verbose = 0  # kbn prints one line per trial instead of Keras Tuner's tables
        super().__init__(oracle=oracle, directory=str(self.logdir), project_name="tuner")
        if not self._is_worker():
            self.oracle.reload()  # BaseTuner reloads only when tunerN.json exists; the trials are what count

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        _atomic_json(self._get_tuner_fname(), self.get_state())

    def reload(self):
        if not self._is_worker():
            self.oracle.reload()

    def _dataset(self, cfg):
        key = (cfg.dataset, cfg.subset)
        if key not in self._datasets:
            self._datasets[key] = kdata.load(cfg.dataset, cfg.data_dir, cfg.subset, verbose=self.verbose)
        return self._datasets[key]

    def run_trial(self, trial, *args, **kwargs):
        v = trial.hyperparameters.values
        cell = self.cells[v["cell"]]
        cfg = self.sweep.train_config(cell, v["lr"], v["seed"], v["phase"])
        folder = self.logdir / ("runs" if v["phase"] == "final" else os.path.join("search", v["phase"]))
        hparams = {**{k: getattr(cell, k) for k in ("dataset", "arch", "norm", "optimizer")},
                   "lr": float(v["lr"]), "seed": int(v["seed"]), "phase": v["phase"]}
        res = train(cfg, folder, verbose=False, dataset=self._dataset(cfg), hparams=hparams)
        m = res.metrics
        self._last = res
        score = m["val_accuracy"] if self.sweep.select_on == "validation" else m["test_accuracy"]
        return {"score": float(score), "val_accuracy": float(m["val_accuracy"]),
                "test_accuracy": float(m["test_accuracy"]), "diverged": float(res.status == "diverged")}

    def search(self):
        """Ask the oracle for trials until it says the sweep is done; one line per trial."""
        total = planned_trials(self.sweep)
        done0 = 0 if self._is_worker() else len(self.oracle.scores())
        done, t_start, failed = 0, time.perf_counter(), 0
        while True:
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == Status.STOPPED:
                break
            if trial.status == Status.IDLE:
                time.sleep(0.5)  # another worker holds the trials that decide what comes next
                continue
            t0 = time.perf_counter()
            self._last = None
            self._try_run_and_update_trial(trial)
            self.on_trial_end(trial)
            done += 1
            if trial.status != Status.COMPLETED:
                failed += 1
            if self.verbose:
                self._progress_line(trial, done0 + done, total, time.perf_counter() - t0,
                                    time.perf_counter() - t_start, done)
        return failed

    def _progress_line(self, trial, n, total, took, elapsed, done_here):
        v = trial.hyperparameters.values
        if trial.status == Status.COMPLETED and self._last is not None:
            m, status = self._last.metrics, self._last.status
            what = f"{self.sweep.select_on[:3]} {m['val_accuracy' if self.sweep.select_on == 'validation' else 'test_accuracy']:.4f}"
            if status == "diverged":
                what += " (diverged)"
            if v["phase"] == "final":
                what += f" test {m['test_accuracy']:.4f}"
        else:
            msg = (trial.message or "").strip().splitlines()
            what = "FAILED: " + (msg[-1] if msg else "unknown error")
        left = elapsed / done_here * max(total - n, 0)
        seed = f" seed {v['seed']}" if v["phase"] == "final" else ""
        self.log(f"[{n:>3}/{total}] {v['cell']} {v['phase']:<6} lr {v['lr']:<9.4g}{seed} {what}  "
                 f"{took:.1f} s | elapsed {_hms(elapsed)}, ~{_hms(left)} left")


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ---------------------------------------------------------------- the sweep folder


@contextlib.contextmanager
def sweep_lock(logdir: Path):
    """An exclusive lock on the sweep folder; the kernel drops it when the holder dies."""
    logdir.mkdir(parents=True, exist_ok=True)
    f = open(logdir / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise SweepBusy(f"{logdir} is in use by a live kbn sweep ({who}); wait for it to finish, "
                        "or give this one another --logdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    try:
        yield
    finally:
        f.close()


def prepare_folder(sweep: SweepConfig, logdir: Path) -> None:
    """Record the sweep in its folder; resuming with a different sweep file is refused."""
    stored = logdir / "sweep.json"
    current = json.loads(json.dumps(sweep.to_dict()))  # tuples -> lists, as stored
    if stored.exists():
        old = json.loads(stored.read_text())
        changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
        if changed:
            raise ConfigError(f"{logdir} holds a sweep with other settings ({', '.join(changed)} differ); "
                              "use another --logdir, or the sweep file it was started with")
    else:
        write_json_atomic(stored, current)


# ---------------------------------------------------------------- running a sweep


def _set_distribution_env(tuner_id: str | None, host: str | None = None, port: int | None = None):
    for k in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        os.environ.pop(k, None)
    if tuner_id is not None:
        os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port))


def run_sweep(sweep: SweepConfig, logdir: Path, log=print) -> int:
    """One process: search every cell, then the final runs. Returns the number of failed trials."""
    logdir = Path(logdir)
    with sweep_lock(logdir):
        prepare_folder(sweep, logdir)
        _set_distribution_env(None)
        tuner = SweepTuner(sweep, logdir, log=log)
        _announce(sweep, logdir, tuner.oracle, log)
        failed = tuner.search()
    return failed


def _announce(sweep, logdir, oracle, log):
    done = len(oracle.scores())
    log(f"kbn sweep {sweep.name}: {len(sweep.cells())} cells, {planned_trials(sweep)} trials "
        f"({done} already done); logs in {logdir}; tensorboard --logdir {logdir}")


def run_worker(sweep: SweepConfig, logdir: Path, log=print) -> int:
    """A worker: Keras Tuner's env (KERASTUNER_TUNER_ID / _ORACLE_IP / _ORACLE_PORT) names the chief."""
    for k in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        if not os.environ.get(k):
            raise ConfigError(f"--worker needs {k} in the environment (or --oracle HOST:PORT)")
    if "chief" in os.environ["KERASTUNER_TUNER_ID"]:
        raise ConfigError("KERASTUNER_TUNER_ID: a worker's id must not contain 'chief'")
    tuner = SweepTuner(sweep, logdir, log=log)
    return tuner.search()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_chief(sweep: SweepConfig, logdir: Path, sweep_file: str, workers: int, host: str = "127.0.0.1",
              port: int | None = None, log=print) -> int:
    """The chief serves the oracle (Keras Tuner's gRPC service) and starts `workers` local workers;
    more may join from other machines. Returns the number of failed trials."""
    import grpc
    from concurrent import futures
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    logdir = Path(logdir)
    with sweep_lock(logdir):
        prepare_folder(sweep, logdir)
        port = port or _free_port(host)
        _set_distribution_env("chief", host, port)
        tuner = SweepTuner(sweep, logdir, log=log)
        oracle = tuner.oracle
        _announce(sweep, logdir, oracle, log)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        protos.get_service_grpc().add_OracleServicer_to_server(oracle_chief.OracleServicer(oracle), server)
        server.add_insecure_port(f"{host}:{port}")
        server.start()
        log(f"kbn sweep: chief serving the oracle on {host}:{port}; starting {workers} local worker(s)")
        procs = []
        try:
            for i in range(workers):
                env = dict(os.environ, KERASTUNER_TUNER_ID=f"tuner{i}", KERASTUNER_ORACLE_IP=host,
                           KERASTUNER_ORACLE_PORT=str(port))
                cmd = [sys.executable, "-m", "kbn", "sweep", sweep_file, "--logdir", str(logdir), "--worker"]
                procs.append(subprocess.Popen(cmd, env=env))
            while True:
                time.sleep(0.5)
                if oracle.finished():
                    break
                if procs and all(p.poll() is not None for p in procs):
                    if oracle.finished():
                        break
                    codes = [p.returncode for p in procs]
                    raise KbnError(f"all workers exited (codes {codes}) before the sweep finished; "
                                   "run the same command again to resume")
            for p in procs:
                p.wait(timeout=120)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            server.stop(grace=2)
            _set_distribution_env(None)
        failed = sum(1 for t in oracle.trials.values() if t.status == Status.FAILED)
    return failed
