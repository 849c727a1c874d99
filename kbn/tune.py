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
from kbn.config import PHASES, SWEEP_FIELDS_ADDED, SweepConfig, check_address
from kbn.errors import ConfigError, DataError, KbnError
from kbn import interrupts
from kbn.plan import (COMPLETED, FAILED, cell_progress, cells_by_key, failure_summary, planned_trials, run_folder,
                      score_value, trial_key, trial_length, work_left)
from kbn.runlog import check_run, write_json_atomic
from kbn.packed import is_packable as packable
from kbn.tboard import sweep_hparams
from kbn.train import SETTING_DEFAULTS, train, train_many

Status = trial_module.TrialStatus


class SweepBusy(KbnError):
    """Another live sweep holds the folder."""


class NoTunerModels(KbnError, NotImplementedError):
    """Keras Tuner's get_best_models on kbn's tuner: the models are the final runs' model.keras."""


# ---------------------------------------------------------------- Keras Tuner pieces



class SweepOracle(kt.Oracle):
    """Hands out the sweep's trials; the remaining work is always derived from the completed trials."""

    def __init__(self, sweep: SweepConfig, log=print):
        # Divergence is a result (chance accuracy), never a failure; a crashed trial is recorded FAILED
        # and not handed out again by this process, so the consecutive-failure limit is off.
        super().__init__(objective=kt.Objective("score", "max"), max_trials=None,
                         max_consecutive_failed_trials=10**9)
        self.sweep, self.log = sweep, log
        self._next_id = 0
        self.started: dict[str, float] = {}  # trial id -> when it was handed out (the chief's ETA)

    def scores(self) -> dict[tuple, float]:
        return {trial_key(t.hyperparameters.values): score_value(t.score)
                for t in self.trials.values() if t.status == COMPLETED and "cell" in t.hyperparameters.values}

    def failed(self) -> dict[tuple, str]:
        """Trials that crashed in this process: their cells wait for a resumed sweep to retry them."""
        return {trial_key(t.hyperparameters.values): t.message
                for t in self.trials.values() if t.status == FAILED}

    def progress(self) -> dict[str, dict]:
        scores, failed = self.scores(), self.failed()
        return {c.key: cell_progress(self.sweep, c, scores, failed) for c in self.sweep.cells()}

    @kt.synchronized
    def create_trial(self, tuner_id):
        """Keras Tuner's create_trial, except that a new trial's id comes after the highest id ever
        used in the folder (keras-tuner counts the trials it could load, so one unreadable trial file
        made two trials share an id and overwrite each other)."""
        if tuner_id in self.ongoing_trials:
            return self.ongoing_trials[tuner_id]
        self.tuner_ids.add(tuner_id)
        self._asking = tuner_id  # populate_space prefers what this tuner's other trials can pack with
        if self._retry_queue:
            trial = self.trials[self._retry_queue.pop()]
            trial.status, trial.message = Status.RUNNING, None
            self.started[trial.trial_id] = time.time()
            self.ongoing_trials[tuner_id] = trial
            self._save_trial(trial)
            self.save()
            return trial
        trial_id = f"{self._next_id:04d}"
        response = self.populate_space(trial_id)
        hps = self.hyperparameters.copy()
        hps.values = response["values"] or {}
        trial = trial_module.Trial(hyperparameters=hps, trial_id=trial_id, status=response["status"])
        if trial.status == Status.RUNNING:
            self._next_id += 1
            self.started[trial_id] = time.time()
            self._record_values(trial)
            self.ongoing_trials[tuner_id] = trial
            self.trials[trial_id] = trial
            self.start_order.append(trial_id)
            self._save_trial(trial)
            self.save()
        elif trial.status == Status.STOPPED:
            self.tuner_ids.discard(tuner_id)
        return trial

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

    @kt.synchronized  # the chief's own thread, while gRPC threads change the trials
    def ended_since(self, seen: set) -> tuple[list, dict]:
        """Trials ended since `seen` (in id order) and the progress, read under the oracle's lock."""
        ended = [t for tid, t in sorted(self.trials.items()) if tid not in seen and t.status in (COMPLETED, FAILED)]
        return ended, self.progress() if ended else {}

    @kt.synchronized  # called from the chief's own thread while gRPC threads change the trials
    def finished(self) -> bool:
        return not self.ongoing_trials and not self._retry_queue and not any(
            p["todo"] for p in self.progress().values())

    def score_trial(self, trial):
        trial.score = trial.metrics.get_last_value("score")
        trial.best_step = 0

    # Atomic writes: a kill -9 at any moment never leaves a torn JSON file behind.
    def save(self):
        write_json_atomic(Path(self._get_oracle_fname()), self.get_state())

    def _save_trial(self, trial):
        write_json_atomic(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())

    def reload(self):
        """Rebuild the state from the trial files alone. Completed trials whose run folders are whole
        stay done; every other trial (interrupted, failed, or with a damaged run folder) runs again
        under its own id. An unreadable trial file is moved to tuner/damaged/ and said: its work is
        planned anew, under a new id."""
        self.trials, ids_seen = {}, [-1]
        cells = cells_by_key(self.sweep)
        for fname in sorted(glob.glob(os.path.join(self._project_dir, "trial_*", "trial.json"))):
            folder = Path(fname).parent
            ids_seen += [int(folder.name.split("_")[1])] if folder.name.split("_")[1].isdigit() else []
            try:
                t = trial_module.Trial.load(fname)
                values = t.hyperparameters.values
                known = values.get("cell") in cells
            except Exception as e:  # noqa: BLE001 - any unreadable file: Keras Tuner raises many kinds
                self._set_aside(folder, f"unreadable ({type(e).__name__})")
                continue
            if not known:
                self._set_aside(folder, f"for a cell this sweep does not have ({values.get('cell')})")
                continue
            if t.status == COMPLETED:
                check = check_run(run_folder(self.sweep, Path(self._project_dir).parent, values, cells))
                if check.damaged:
                    self.log(f"kbn: {folder.name}'s run is damaged ({check.problem}); it runs again")
                    t.status = Status.INVALID
            elif t.status == FAILED:
                self.log(f"kbn: {folder.name} failed last time ({failure_summary(t.message)}); it runs again")
                t.status = Status.INVALID
            self.trials[t.trial_id] = t
        damaged = glob.glob(os.path.join(self._project_dir, "damaged", "trial_*"))
        ids_seen += [int(Path(d).name.split("_")[1].split("-")[0]) for d in damaged]
        self._next_id = max(ids_seen) + 1
        ids = sorted(self.trials)
        self.start_order = list(ids)
        self.end_order = [i for i in ids if self.trials[i].status == COMPLETED]
        self.ongoing_trials = {}
        self.tuner_ids = set()
        self._run_times = collections.defaultdict(int)
        # create_trial pops from the end: reversed, so trials to redo run in id order.
        self._retry_queue = [i for i in reversed(ids) if self.trials[i].status != COMPLETED]
        self._tried_so_far = set()
        self._id_to_hash = collections.defaultdict(lambda: None)

    def _set_aside(self, folder: Path, why: str) -> None:
        dest = Path(self._project_dir) / "damaged" / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        dest.parent.mkdir(exist_ok=True)
        os.replace(folder, dest)
        self.log(f"kbn: tuner/{folder.name}/trial.json is {why}; moved to {dest}; its work is planned again")


class SweepTuner(base_tuner.BaseTuner):
    """Runs the trials the oracle hands out: each one is a `kbn.train` run."""

    def __init__(self, sweep: SweepConfig, logdir: str | Path, verbose: bool = True, log=print, pack: int = 1,
                 datasets: dict | None = None):
        self.sweep, self.logdir, self.verbose, self.log = sweep, Path(logdir), verbose, log
        self.pack = pack  # trials pulled from the oracle at once and trained packed where they can be
        self.cells = {c.key: c for c in sweep.cells()}
        self._datasets: dict = datasets if datasets is not None else {}
        self._carry: list = []
        self._metrics_of: dict = {}  # trial id -> its metrics, for the progress line (a worker's oracle is remote)
        oracle = SweepOracle(sweep, log=log)
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
        return _load(self._datasets, cfg, self.verbose)

    def _setup(self, trial):
        v = trial.hyperparameters.values
        cell = self.cells[v["cell"]]
        cfg = self.sweep.train_config(cell, v["lr"], v["seed"], v["phase"])
        run = run_folder(self.sweep, self.logdir, v, self.cells)
        hparams = sweep_hparams(self.sweep, cell, v, session=run.relative_to(self.logdir).as_posix())
        return cfg, run.parent, hparams

    def _protocol(self, trial) -> dict:
        return {**self.sweep.protocol(), "phase": trial.hyperparameters.values["phase"]}

    def _metrics(self, res) -> dict:
        m = res.metrics
        score = m["val_accuracy"] if self.sweep.select_on == "validation" else m["test_accuracy"]
        return {"score": float(score), "val_accuracy": float(m["val_accuracy"]),
                "test_accuracy": float(m["test_accuracy"]), "diverged": float(res.status == "diverged")}

    @staticmethod
    def _keeps_model(trial) -> bool:
        """Final runs keep their trained network (model.keras); search trials would cost disk for nothing."""
        return trial.hyperparameters.values["phase"] == "final"

    def get_best_models(self, num_models=1):
        """Keras Tuner's call, answered with where kbn keeps its models: the Keras Tuner project holds
        none (its "best" would rank all cells, phases and seeds together); each final run keeps its
        network as runs/<run>/model.keras, listed by kbn.open_sweep(DIR).final_runs."""
        raise NoTunerModels(
            f"kbn keeps no models in the Keras Tuner project, and its best trials mix every cell, phase and "
            f"seed: each final run keeps its trained network as {self.logdir}/runs/<run>/model.keras (not "
            f"the search trials); kbn.open_sweep('{self.logdir}').final_runs lists them per cell and seed "
            "(column model, with test and validation accuracy), and .chosen() gives each cell's learning rate")

    def run_trial(self, trial, *args, **kwargs):
        """One trial alone (Keras Tuner's own entry point)."""
        cfg, folder, hparams = self._setup(trial)
        res = train(cfg, folder, verbose=False, dataset=self._dataset(cfg), hparams=hparams,
                    protocol=self._protocol(trial), save_model=self._keeps_model(trial))
        self._metrics_of[trial.trial_id] = self._metrics(res)
        return self._metrics_of[trial.trial_id]

    def _run_group(self, group) -> None:
        """Train one trial, or several of one cell and phase (learning rates or seeds differ) packed
        as one model, and record each as COMPLETED, or FAILED with the exception's first line. A
        KbnError is no training outcome (data gone, a bad setting, Ctrl-C): it stops the sweep, and the
        trials stay unfinished, to run on resume (Keras Tuner's FatalError, in kbn's terms)."""
        try:
            if len(group) == 1:
                results = [None]
                self._run_and_update_trial(group[0])
            else:
                setups = [self._setup(t) for t in group]
                cfgs = [s[0] for s in setups]
                results = train_many(cfgs, setups[0][1], verbose=False, dataset=self._dataset(cfgs[0]),
                                     hparams=[s[2] for s in setups], protocol=self._protocol(group[0]),
                                     save_model=self._keeps_model(group[0]))  # a group is of one phase
        except KbnError:
            raise
        except Exception as e:  # noqa: BLE001 - a crash is recorded and the sweep goes on with other cells
            first = (str(e).strip().splitlines() or [""])[0]
            message = f"{type(e).__name__}: {first}\n{traceback.format_exc()}"
            for t in group:
                t.status, t.message = Status.FAILED, message
            return
        for t, res in zip(group, results):
            if res is not None:
                self._metrics_of[t.trial_id] = self._metrics(res)
                self.oracle.update_trial(t.trial_id, self._metrics_of[t.trial_id], step=0)
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
        done0 = 0 if self._is_worker() else len(self.oracle.scores())
        done, t_start, failed, work_done = 0, time.perf_counter(), 0, 0
        while True:
            interrupts.check()
            batch = self._pull()
            if batch is None:
                break
            if not batch:
                interrupts.sleep(0.5)  # another worker holds the trials that decide what comes next
                continue
            t0 = time.perf_counter()
            self._run_group(batch)
            took = (time.perf_counter() - t0) / len(batch)
            for trial in batch:
                self.on_trial_end(trial)
                done += 1
                failed += trial.status != Status.COMPLETED
                work_done += trial_length(self.sweep, trial.hyperparameters.values["phase"])
                if self.verbose:
                    elapsed = time.perf_counter() - t_start
                    total, left = self._left(elapsed, done, work_done)
                    self._progress_line(trial, done0 + done, total, took, elapsed, left, len(batch))
        return failed

    def _left(self, elapsed, done_here, work_done) -> tuple[int, float]:
        """(trials planned, seconds left): the time per unit of training so far times the training
        left, so that long final runs weigh as much as they take. A worker sees no plan: it counts
        trials."""
        if self._is_worker():
            total = planned_trials(self.sweep)
            return total, elapsed / done_here * max(total - done_here, 0)
        progress = self.oracle.progress()
        return planned_trials(self.sweep, progress), elapsed / work_done * work_left(self.sweep, progress)

    def _progress_line(self, trial, n, total, took, elapsed, left, packed):
        metrics = self._metrics_of.pop(trial.trial_id, None)
        self.log(progress_line(self.sweep, trial, metrics, n, total, took, elapsed, left, packed))


def progress_line(sweep: SweepConfig, trial, metrics: dict | None, n, total, took, elapsed, left,
                  packed: int = 1) -> str:
    """One line per ended trial: what it trained, its score (test too for a final run) or why it
    failed, and the sweep's elapsed time and ETA. `metrics` as SweepTuner._metrics gives them."""
    v = trial.hyperparameters.values
    if trial.status == Status.COMPLETED and metrics:
        what = f"{sweep.select_on[:3]} {metrics['score']:.4f}" + (" (diverged)" if metrics["diverged"] else "")
        if v["phase"] == "final":
            what += f" test {metrics['test_accuracy']:.4f}"
    else:
        what = f"FAILED: {failure_summary(trial.message)} (traceback in tuner/trial_{trial.trial_id}/trial.json)"
    seed = f" seed {v['seed']}" if v["phase"] == "final" else ""
    together = f" ({packed} packed)" if packed > 1 else ""
    return (f"[{n:>3}/{total}] {v['cell']} {v['phase']:<6} lr {v['lr']:<9.4g}{seed} {what}  "
            f"{took:.1f} s{together} | elapsed {_hms(elapsed)}, ~{_hms(left)} left")


class ChiefProgress:
    """The chief's view of a sweep that its workers train: a progress line per trial as it ends, with
    the same global count and length-weighted ETA as a one-process sweep (workers started by the
    chief stay quiet, so each trial is said once)."""

    def __init__(self, sweep: SweepConfig, oracle: SweepOracle, log):
        self.sweep, self.oracle, self.log = sweep, oracle, log
        self.seen = {tid for tid, t in oracle.trials.items() if t.status in (COMPLETED, FAILED)}
        self.done0, self.t0, self.work = len(self.seen), time.perf_counter(), 0

    def poll(self) -> None:
        ended, progress = self.oracle.ended_since(self.seen)
        for t in ended:
            self.seen.add(t.trial_id)
            self.work += trial_length(self.sweep, t.hyperparameters.values["phase"])
            elapsed = time.perf_counter() - self.t0
            left = elapsed / self.work * work_left(self.sweep, progress)
            took = time.time() - self.oracle.started.get(t.trial_id, time.time())
            metrics = {k: t.metrics.get_last_value(k) for k in ("score", "diverged", "test_accuracy")} \
                if t.status == COMPLETED else None
            self.log(progress_line(self.sweep, t, metrics, len(self.seen), planned_trials(self.sweep, progress),
                                   took, elapsed, left))


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
    """Record the sweep in its folder; resuming with a different sweep file is refused. Without
    sweep.json (deleted, or a folder of older runs) the runs on disk are checked against the sweep."""
    stored = logdir / "sweep.json"
    current = json.loads(json.dumps(sweep.to_dict()))  # tuples -> lists, as stored
    if stored.exists():
        try:
            old = {**SWEEP_FIELDS_ADDED, **json.loads(stored.read_text())}
        except ValueError:
            raise ConfigError(f"{stored} is unreadable; restore it, or delete it to have the runs on disk "
                              "checked against the sweep file") from None
        changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
        if changed:
            raise ConfigError(f"{logdir} holds a sweep with other settings ({', '.join(changed)} differ); "
                              "use another --logdir, or the sweep file it was started with")
        return
    mismatch = runs_against_sweep(sweep, logdir)
    if mismatch:
        raise ConfigError(f"{logdir} has no sweep.json and its runs were made by another sweep ({mismatch}); "
                          "use another --logdir, or the sweep file they were made with")
    write_json_atomic(stored, current)


def runs_against_sweep(sweep: SweepConfig, logdir: Path) -> str | None:
    """The first way the runs and trials in `logdir` disagree with `sweep`, or None."""
    cells = cells_by_key(sweep)
    ignore = ("lr", "seed", "data_dir")
    for config_path in sorted(logdir.glob("runs/*/config.json")) + sorted(logdir.glob("search/*/*/config.json")):
        phase = "final" if config_path.parent.parent.name == "runs" else config_path.parent.parent.name
        try:
            s = json.loads(config_path.read_text())["settings"]
            key = f"{s['dataset']}-{s['arch']}-{s['norm']}-{s['optimizer']}"
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged run is redone anyway
        where = config_path.parent.relative_to(logdir)
        if key not in cells or phase not in PHASES:
            return f"{where} is of cell {key}, not in this sweep"
        want = sweep.train_config(cells[key], s["lr"], s["seed"], phase).to_dict()
        s = {**SETTING_DEFAULTS, **s}  # runs made before a setting existed trained at its default
        diff = [f"{k} {s.get(k)!r} vs {v!r}" for k, v in want.items() if k not in ignore and s.get(k) != v]
        if diff:
            return f"{where}: {', '.join(diff)}"
    for fname in sorted(glob.glob(str(logdir / "tuner" / "trial_*" / "trial.json"))):
        try:
            v = json.loads(Path(fname).read_text())["hyperparameters"]["values"]
            cell = cells.get(v["cell"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # reload sets it aside
        where = Path(fname).parent.relative_to(logdir)
        if cell is None:
            return f"{where} is of cell {v['cell']}, not in this sweep"
        if v["phase"] == "coarse" and float(v["lr"]) not in sweep.coarse_grid(cell.optimizer):
            return f"{where}: coarse lr {v['lr']} is not in this sweep's coarse grid"
        seeds = sweep.seeds if v["phase"] == "final" else sweep.search_seeds
        if int(v["seed"]) not in seeds:
            return f"{where}: seed {v['seed']} is not among this sweep's {v['phase']} seeds {list(seeds)}"
    return None


def preflight(sweep: SweepConfig, pack: int = 1, verbose: bool = True) -> dict:
    """Everything a sweep can check before it trains, so a missing dataset or an impossible setting
    fails in one line at once, instead of as one failed trial per cell: every dataset loads (with its
    subset), every cell's network builds and its optimizer exists, and packing works where asked.
    Returns the datasets loaded, keyed as SweepTuner keeps them."""
    from kbn import models, optim
    from kbn.packed import build_packed

    datasets = {}
    for cell in sweep.cells():
        cfg = sweep.train_config(cell, sweep.some_lr(cell.optimizer), sweep.seeds[0], "coarse")
        try:
            ds = _load(datasets, cfg, verbose)
        except DataError as e:  # its several lines of how-to belong to `kbn data prepare`
            first = str(e).splitlines()[0].split(". Tried:")[0]
            raise DataError(f"{first}; `kbn data prepare {cfg.dataset}` says how to get it") from None
        if cfg.batch_size > len(ds.y_train):
            raise ConfigError(f"batch_size: {cfg.batch_size} is more than the {len(ds.y_train)} training examples of "
                              f"{cfg.dataset}; every step would see them all")
        optim.make_optimizer(cfg.optimizer, cfg.lr)
        single = models.build(cfg.arch, ds.input_shape, ds.num_classes, cfg.norm, cfg.activation, cfg.depth, cfg.width)
        if pack > 1 and packable(cfg.arch):
            try:
                build_packed([single, single], [cfg.lr, cfg.lr], cfg.optimizer)
            except NotImplementedError as e:
                raise ConfigError(f"--pack {pack}: cell {cell.key} cannot be packed ({e}); use --pack 1") from None
    return datasets


def _load(datasets: dict, cfg, verbose: bool):
    key = (cfg.dataset, cfg.subset)
    if key not in datasets:
        datasets[key] = kdata.load(cfg.dataset, cfg.data_dir, cfg.subset, verbose=verbose)
    return datasets[key]


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


def run_sweep(sweep: SweepConfig, logdir: Path, log=print, pack: int | None = None, workers: int | None = 1,
              sweep_file: str | None = None, host: str = "127.0.0.1", port: int | None = None) -> int:
    """Run a sweep to its end (or to its failed trials); returns the number of failed trials.

    workers: 1, this process trains every trial; N > 1, it serves the oracle as Keras Tuner's chief and
    starts N local workers (`sweep_file` is what they read); 0, it only serves (workers join from other
    machines); None, kbn chooses from the machine's cores and memory (kbn.resources) and says why."""
    logdir = Path(logdir)
    if workers != 1:
        check_address(host, port)
    with sweep_lock(logdir):
        prepare_folder(sweep, logdir)
        pack = pack or default_pack()
        datasets = preflight(sweep, pack)
        cores_each = None
        if workers is None:
            choice = auto_workers(sweep, datasets, pack)
            workers, cores_each = choice.workers, choice.cores_each
            log(f"kbn sweep: {workers} local worker(s): {choice.why} (--workers N overrides)")
        elif workers > 1:
            check_workers(workers, sweep, datasets, pack)
        if workers == 1:
            _set_distribution_env(None)
            tuner = SweepTuner(sweep, logdir, log=log, pack=pack, datasets=datasets)
            _announce(sweep, logdir, tuner.oracle, log)
            tuner.search()
            return len(tuner.oracle.failed())
        return _serve(sweep, logdir, sweep_file, workers, host, port, log, pack, datasets, cores_each)


def auto_workers(sweep: SweepConfig, datasets: dict, pack: int):
    """kbn.resources' choice for this sweep on this machine."""
    from kbn import resources

    conv = any(c.arch in CONV_ARCHS for c in sweep.cells())
    biggest = _dataset_bytes(datasets)
    parallel = max(len(sweep.cells()) * len(sweep.coarse) * len(sweep.search_seeds), len(sweep.cells()) * len(sweep.seeds))
    return resources.choose_workers(resources.this_machine(gpu=pack > 1), conv, biggest, parallel)


def check_workers(workers: int, sweep: SweepConfig, datasets: dict, pack: int) -> None:
    """An explicit --workers N that the memory cannot hold fails before any process starts (1000
    workers on a 2-core machine once took the whole machine down)."""
    from kbn import resources

    machine = resources.this_machine()
    biggest = _dataset_bytes(datasets)
    fits = resources.memory_capacity(machine, biggest)
    if workers > fits:
        need = workers * resources.worker_bytes(biggest) / 2**30
        raise ConfigError(f"workers: {workers} local workers need about {need:.0f} GiB; {machine.memory / 2**30:.1f} "
                          f"GiB is available, enough for {fits} (kbn would choose "
                          f"{auto_workers(sweep, datasets, pack).workers}); give fewer, or leave --workers out")


def _dataset_bytes(datasets: dict) -> float:
    return max(sum(getattr(ds, f"x_{s}").nbytes for s in ("train", "val", "test")) for ds in datasets.values())


CONV_ARCHS = ("cnn", "deep_cnn")


def _announce(sweep, logdir, oracle, log):
    if "none" not in sweep.norms:
        log("kbn sweep: note: no 'none' arm in norms: the report will have nothing to compare the norms with")
    done = len(oracle.scores())
    log(f"kbn sweep {sweep.name}: {len(sweep.cells())} cells, {planned_trials(sweep, oracle.progress())} trials "
        f"({done} already done); logs in {logdir}; tensorboard --logdir {logdir}")


ORACLE_TIMEOUT = float(os.environ.get("KBN_ORACLE_TIMEOUT", 60))  # seconds a worker waits for its chief


def run_worker(sweep: SweepConfig, logdir: Path, log=print, pack: int | None = None) -> int:
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
    # keras-tuner's client waits up to an hour for a chief that is not there: ask once, boundedly
    try:
        grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=ORACLE_TIMEOUT)
    except grpc.FutureTimeoutError:
        raise KbnError(f"no kbn chief answers at {address} (waited {ORACLE_TIMEOUT:g} s); start it with "
                       "kbn sweep FILE --workers N --host H --port P, or check the address") from None
    pack = pack or default_pack()
    local = bool(os.environ.get("KBN_CHIEF_PID"))  # the chief that started it says each trial
    tuner = SweepTuner(sweep, logdir, log=log, pack=pack, datasets=preflight(sweep, pack, verbose=not local),
                       verbose=not local)
    try:
        return tuner.search()
    except grpc.RpcError as e:
        raise KbnError(f"lost the chief at {address} ({e.code().name}); run the worker again once it is back") from None


def _die_with_local_chief() -> None:
    """A local worker ends when its chief does, even by kill -9: otherwise it would wait on the gone
    chief's gRPC calls (up to an hour) holding a core. Linux's parent-death signal does it."""
    chief = os.environ.get("KBN_CHIEF_PID")
    if not chief or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() != int(chief):  # the chief died before the signal was armed
        raise interrupts.Interrupted("the chief that started this worker is gone")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_chief(sweep: SweepConfig, logdir: Path, sweep_file: str, workers: int, host: str = "127.0.0.1",
              port: int | None = None, log=print, pack: int | None = None) -> int:
    """The chief alone or with `workers` local workers (run_sweep with workers != 1)."""
    return run_sweep(sweep, logdir, log, pack, workers, sweep_file, host, port)


def _serve(sweep, logdir, sweep_file, workers, host, port, log, pack, datasets, cores_each=None) -> int:
    """The chief serves the oracle (Keras Tuner's gRPC service) and starts `workers` local workers, each
    pinned to its own cores when kbn chose their number; more may join from other machines. A local
    worker that stops with an error (or Ctrl-C / SIGTERM here) stops the whole sweep, resumable."""
    import grpc
    from concurrent import futures
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    port = port or _free_port(host)
    _set_distribution_env("chief", host, port)
    tuner = SweepTuner(sweep, logdir, log=log, datasets=datasets)
    oracle = tuner.oracle
    _announce(sweep, logdir, oracle, log)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    protos.get_service_grpc().add_OracleServicer_to_server(oracle_chief.OracleServicer(oracle), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound != port:
        raise ConfigError(f"port: cannot listen on {host}:{port} (in use?); give another --port or leave it out")
    server.start()
    log(f"kbn sweep: chief serving the oracle on {host}:{port}; starting {workers} local worker(s)")
    procs = []
    try:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        for i in range(workers):
            env = dict(os.environ, KERASTUNER_TUNER_ID=f"tuner{i}", KERASTUNER_ORACLE_IP=host,
                       KERASTUNER_ORACLE_PORT=str(port), KBN_CHIEF_PID=str(os.getpid()))
            if cores_each and len(cpus) >= workers * cores_each:
                env["KBN_WORKER_CPUS"] = ",".join(map(str, cpus[i * cores_each:(i + 1) * cores_each]))
            cmd = [sys.executable, "-m", "kbn", "sweep", sweep_file, "--logdir", str(logdir), "--worker"]
            cmd += ["--pack", str(pack)] if pack else []
            procs.append(subprocess.Popen(cmd, env=env))
        progress = ChiefProgress(sweep, oracle, log)
        while not oracle.finished():
            interrupts.sleep(0.5)
            progress.poll()
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
        server.stop(grace=2)
        _set_distribution_env(None)
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
