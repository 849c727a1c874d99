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
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import keras_tuner as kt
from keras_tuner.src.engine import base_tuner
from keras_tuner.src.engine import trial as trial_module

from kbn import data as kdata
from kbn.config import SweepConfig
from kbn.errors import ConfigError, KbnError
from kbn.plan import ENDED, cell_progress, planned_trials, score_value, trial_key
from kbn.runlog import write_json_atomic
from kbn.packed import is_packable as packable
from kbn.train import train, train_many

Status = trial_module.TrialStatus


class SweepBusy(KbnError):
    """Another live sweep holds the folder."""


# ---------------------------------------------------------------- Keras Tuner pieces



class SweepOracle(kt.Oracle):
    """Hands out the sweep's trials; the remaining work is always derived from the ended trials."""

    def __init__(self, sweep: SweepConfig):
        # Divergence is a result (chance accuracy), never a failure; real crashes must not stop
        # a long sweep either, so the consecutive-failure limit is effectively off.
        super().__init__(objective=kt.Objective("score", "max"), max_trials=None,
                         max_consecutive_failed_trials=10**9)
        self.sweep = sweep

    def scores(self) -> dict[tuple, float]:
        return {trial_key(t.hyperparameters.values): score_value(t.score)
                for t in self.trials.values() if t.status in ENDED and "cell" in t.hyperparameters.values}

    def progress(self) -> dict[str, dict]:
        scores = self.scores()
        return {c.key: cell_progress(self.sweep, c, scores) for c in self.sweep.cells()}

    @kt.synchronized
    def create_trial(self, tuner_id):
        self._asking = tuner_id  # populate_space prefers what this tuner's other trials can pack with
        return super().create_trial(tuner_id)

    def populate_space(self, trial_id):
        busy = {trial_key(t.hyperparameters.values) for t in self.ongoing_trials.values()}
        todo = [item for prog in self.progress().values() for item in prog["todo"] if trial_key(item) not in busy]
        # A tuner that trains packed asks as <id>, <id>+1, ...: hand it more of the group it holds.
        base = str(getattr(self, "_asking", "")).split("+")[0]
        held = [t.hyperparameters.values for tid, t in self.ongoing_trials.items() if tid.split("+")[0] == base]
        groups = {group_key(v) for v in held}
        todo.sort(key=lambda item: group_key(item) not in groups)  # stable: the plan's order otherwise
        if todo:
            return {"status": Status.RUNNING, "values": todo[0]}
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
        write_json_atomic(Path(self._get_oracle_fname()), self.get_state())

    def _save_trial(self, trial):
        write_json_atomic(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())

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

    def __init__(self, sweep: SweepConfig, logdir: str | Path, verbose: bool = True, log=print, pack: int = 1):
        self.sweep, self.logdir, self.verbose, self.log = sweep, Path(logdir), verbose, log
        self.pack = pack  # trials pulled from the oracle at once and trained packed where they can be
        self.cells = {c.key: c for c in sweep.cells()}
        self._datasets: dict = {}
        self._results: dict = {}
        self._carry: list = []
        oracle = SweepOracle(sweep)
        oracle.verbose = 0  # kbn prints one line per trial instead of Keras Tuner's tables
        super().__init__(oracle=oracle, directory=str(self.logdir), project_name="tuner")
        if not self._is_worker():
            self.oracle.reload()  # BaseTuner reloads only when tunerN.json exists; the trials are what count

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json_atomic(Path(self._get_tuner_fname()), self.get_state())

    def reload(self):
        if not self._is_worker():
            self.oracle.reload()

    def _dataset(self, cfg):
        key = (cfg.dataset, cfg.subset)
        if key not in self._datasets:
            self._datasets[key] = kdata.load(cfg.dataset, cfg.data_dir, cfg.subset, verbose=self.verbose)
        return self._datasets[key]

    def _setup(self, trial):
        v = trial.hyperparameters.values
        cell = self.cells[v["cell"]]
        cfg = self.sweep.train_config(cell, v["lr"], v["seed"], v["phase"])
        folder = self.logdir / ("runs" if v["phase"] == "final" else os.path.join("search", v["phase"]))
        hparams = {**{k: getattr(cell, k) for k in ("dataset", "arch", "norm", "optimizer")},
                   "lr": float(v["lr"]), "seed": int(v["seed"]), "phase": v["phase"]}
        return cfg, folder, hparams

    def _metrics(self, res) -> dict:
        m = res.metrics
        score = m["val_accuracy"] if self.sweep.select_on == "validation" else m["test_accuracy"]
        return {"score": float(score), "val_accuracy": float(m["val_accuracy"]),
                "test_accuracy": float(m["test_accuracy"]), "diverged": float(res.status == "diverged")}

    def run_trial(self, trial, *args, **kwargs):
        """One trial alone (Keras Tuner's own entry point)."""
        cfg, folder, hparams = self._setup(trial)
        res = train(cfg, folder, verbose=False, dataset=self._dataset(cfg), hparams=hparams)
        self._results[trial.trial_id] = res
        return self._metrics(res)

    def _run_packed(self, group) -> None:
        """Trials of one cell and phase (learning rates or seeds differ) trained as one model."""
        setups = [self._setup(t) for t in group]
        cfgs = [s[0] for s in setups]
        try:
            results = train_many(cfgs, setups[0][1], verbose=False, dataset=self._dataset(cfgs[0]),
                                 hparams=[s[2] for s in setups])
        except Exception:  # noqa: BLE001 - like Keras Tuner: a crashed trial is reported, the sweep goes on
            message = traceback.format_exc()
            for t in group:
                t.status, t.message = Status.INVALID, message
            return
        for t, res in zip(group, results):
            self._results[t.trial_id] = res
            self.oracle.update_trial(t.trial_id, self._metrics(res), step=0)
            t.status = Status.COMPLETED

    def _pull(self):
        """Up to `pack` trials of one cell and phase from the oracle, each under its own tuner
        id (<id>, <id>+1, ...). A trial that cannot join the batch is kept for the next one. None
        once the oracle says the sweep is done."""
        batch, self._carry = self._carry, []
        held = {t.kbn_tuner_id for t in batch}

        def ask():
            tid = next(t for t in [self.tuner_id] + [f"{self.tuner_id}+{j}" for j in range(1, len(held) + 2)]
                       if t not in held)
            trial = self.oracle.create_trial(tid)
            trial.kbn_tuner_id = tid
            if trial.status == Status.RUNNING:
                held.add(tid)
            return trial

        if not batch:
            first = ask()
            if first.status == Status.STOPPED:
                return None
            if first.status != Status.RUNNING:
                return []
            batch = [first]
        while len(batch) < self.pack and packable(self.cells[batch[0].hyperparameters.values["cell"]].arch):
            t = ask()
            if t.status != Status.RUNNING:
                break
            if _group_key(t) != _group_key(batch[0]):
                self._carry = [t]
                break
            batch.append(t)
        return batch

    def search(self):
        """Ask the oracle for trials until it says the sweep is done; one line per trial."""
        total = planned_trials(self.sweep)
        done0 = 0 if self._is_worker() else len(self.oracle.scores())
        done, t_start, failed = 0, time.perf_counter(), 0
        while True:
            batch = self._pull()
            if batch is None:
                break
            if not batch:
                time.sleep(0.5)  # another worker holds the trials that decide what comes next
                continue
            t0 = time.perf_counter()
            if len(batch) == 1:
                self._try_run_and_update_trial(batch[0])
            else:
                self._run_packed(batch)
            took = (time.perf_counter() - t0) / len(batch)
            for trial in batch:
                self.on_trial_end(trial)
                done += 1
                failed += trial.status != Status.COMPLETED
                if self.verbose:
                    self._progress_line(trial, done0 + done, total, took, time.perf_counter() - t_start, done,
                                        len(batch))
        return failed

    def _progress_line(self, trial, n, total, took, elapsed, done_here, packed):
        v = trial.hyperparameters.values
        res = self._results.pop(trial.trial_id, None)
        if trial.status == Status.COMPLETED and res is not None:
            m, status = res.metrics, res.status
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
        together = f" ({packed} packed)" if packed > 1 else ""
        self.log(f"[{n:>3}/{total}] {v['cell']} {v['phase']:<6} lr {v['lr']:<9.4g}{seed} {what}  "
                 f"{took:.1f} s{together} | elapsed {_hms(elapsed)}, ~{_hms(left)} left")


def group_key(values: dict) -> tuple:
    """Trials with the same key differ only in learning rate and seed: they can train packed (the
    search's learning rates, or the final runs' seeds, each seed with its own data order)."""
    return values["cell"], values["phase"]


def _group_key(trial) -> tuple:
    return group_key(trial.hyperparameters.values)


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


def default_pack() -> int:
    """How many trials to pull and train packed at once, where it pays (kbn bench, README): on a
    GPU, 32; on CPU, 1 (2 cores are bound by arithmetic, and a smoke sweep ran no faster packed)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if jax.devices()[0].platform == "gpu":
            return 32
    return 1


def run_sweep(sweep: SweepConfig, logdir: Path, log=print, pack: int | None = None) -> int:
    """One process: search every cell, then the final runs. Returns the number of failed trials."""
    logdir = Path(logdir)
    with sweep_lock(logdir):
        prepare_folder(sweep, logdir)
        _set_distribution_env(None)
        tuner = SweepTuner(sweep, logdir, log=log, pack=pack or default_pack())
        _announce(sweep, logdir, tuner.oracle, log)
        failed = tuner.search()
    return failed


def _announce(sweep, logdir, oracle, log):
    done = len(oracle.scores())
    log(f"kbn sweep {sweep.name}: {len(sweep.cells())} cells, {planned_trials(sweep)} trials "
        f"({done} already done); logs in {logdir}; tensorboard --logdir {logdir}")


def run_worker(sweep: SweepConfig, logdir: Path, log=print, pack: int | None = None) -> int:
    """A worker: Keras Tuner's env (KERASTUNER_TUNER_ID / _ORACLE_IP / _ORACLE_PORT) names the chief."""
    for k in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        if not os.environ.get(k):
            raise ConfigError(f"--worker needs {k} in the environment (or --oracle HOST:PORT)")
    if "chief" in os.environ["KERASTUNER_TUNER_ID"]:
        raise ConfigError("KERASTUNER_TUNER_ID: a worker's id must not contain 'chief'")
    tuner = SweepTuner(sweep, logdir, log=log, pack=pack or default_pack())
    return tuner.search()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_chief(sweep: SweepConfig, logdir: Path, sweep_file: str, workers: int, host: str = "127.0.0.1",
              port: int | None = None, log=print, pack: int | None = None) -> int:
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
                cmd += ["--pack", str(pack)] if pack else []
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
