"""The sweep: per cell, a coarse learning-rate grid, a fine grid around its winner, then the chosen
learning rate trained once per seed — all as trials of one Keras Tuner project.
It must not know how a run trains beyond train_many, nor how the report reads the results.

Every step of every cell is a Keras Tuner trial with hyperparameters {cell, phase, lr, seed}, handed out
by `SweepOracle`. The oracle keeps no plan of its own: what is left to do is derived from the trials
on disk each time it is asked, which is what makes a sweep resumable after `kill -9` (keras-tuner
1.4.8's own GridSearchOracle is not: keras-team/keras-tuner#1055) and lets Keras Tuner's chief/worker
mode spread one sweep over several processes or machines. Files are written atomically.

This module holds the oracle, the tuner and the checks before a sweep trains (`preflight`);
kbn.runner's `run_sweep` runs it here or over workers; the folder's lock and sweep.json are kbn.sweep_folder's, the chief and its worker
processes kbn.distribute's, and what is left to do kbn.plan's. It must not know how a trial trains
beyond calling kbn.train.

Folder of a sweep (`logs/<name>/` by default):
  sweep.json          the validated sweep file; resuming with a different one is refused
  components.json     a user's own components (import strings, npz files) and their files' sha256
  tuner/              the Keras Tuner project: oracle.json, trial_NNNN/trial.json
  search/coarse|fine/ the search trials, each a full kbn run folder (metrics.csv, TensorBoard, HParams)
  runs/               the final runs, one per seed: what reports read
  .lock               held by the live sweep: a second one on the same folder is refused
"""

from __future__ import annotations

import errno
import glob
import os
import time
import traceback
from pathlib import Path

import keras_tuner as kt
from keras_tuner.engine import base_tuner
from keras_tuner.engine import trial as trial_module

from kbn import compat, console, data as kdata, registry
from kbn.config import SweepConfig
from kbn.errors import DataError, DataFileError, KbnError
from kbn import interrupts
from kbn.clock import Pace, process_compile_seconds
from kbn.plan import (COMPLETED, FAILED, cell_progress, cells_by_key, check_trial_run, failure_summary, keeps_model,
                      off_plan, planned_trials, run_folder, score_value, trial_key, trial_length,
                      work_left)
from kbn.runlog import write_json_atomic
from kbn.trials import read_trial
from kbn.packed import is_packable as packable
from kbn.tboard import sweep_hparams
from kbn.train import plan_schedule, train, train_many

Status = trial_module.TrialStatus
# keras-tuner's Trial proto (a worker's end_trial over gRPC) has no message: a worker's crash reason
# travels to the chief as this hyperparameter value, which the chief's oracle takes off again
FAILURE_KEY = "kbn_failure"


UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def unwritable(e: BaseException, logdir: Path) -> KbnError | None:
    """The one-line error for an OSError (or one it was raised from) that says the sweep folder
    cannot be written (read-only, no permission, full), None for any other error: no trial's outcome,
    it stops the sweep, resumable."""
    while e is not None:
        name = getattr(e, "filename", None)
        if isinstance(e, OSError) and e.errno in UNWRITABLE and name is not None:
            path = Path(os.path.abspath(os.fsdecode(name)))
            root = Path(os.path.abspath(logdir))
            if path == root or root in path.parents:
                return KbnError(f"cannot write {path}: {e.strerror}; make {root} writable (or free space) and "
                                "run the same command to resume")
        e = e.__cause__ or e.__context__
    return None


class NoTunerModels(KbnError, NotImplementedError):
    """Keras Tuner's get_best_models on kbn's tuner: the models are the final runs' model.keras."""


# ---------------------------------------------------------------- Keras Tuner pieces



# compat.oracle_class: Keras Tuner's Oracle with kbn's create_trial (ids from new_trial_id) and save_trial hook
class SweepOracle(compat.oracle_class()):
    """Hands out the sweep's trials; the remaining work is always derived from the completed trials."""

    def __init__(self, sweep: SweepConfig, log=console.say):
        # Divergence is a result (chance accuracy), never a failure; a crashed trial is recorded FAILED
        # and not handed out again by this process, so the consecutive-failure limit is off.
        super().__init__(objective=kt.Objective("score", "max"), max_trials=None,
                         max_consecutive_failed_trials=10**9)
        self.sweep, self.log = sweep, log
        self._next_id = 0
        self.started: dict[str, float] = {}  # trial id -> when it was handed out (the chief's ETA)
        self.write_error: KbnError | None = None  # the sweep folder could not be written (check_writes)

    def _completed(self):
        return [t for t in self.trials.values() if t.status == COMPLETED and "cell" in t.hyperparameters.values]

    def scores(self) -> dict[tuple, float]:
        return {trial_key(t.hyperparameters.values): score_value(t.score) for t in self._completed()}

    def outcomes(self) -> dict[tuple, str]:
        """How each completed trial ended (kbn.stability's kinds), from its metrics."""
        return {trial_key(t.hyperparameters.values): outcome_kind(trial_metrics(t)) for t in self._completed()}

    def failed(self) -> dict[tuple, str]:
        """Trials that crashed in this process: their cells wait for a resumed sweep to retry them."""
        return {trial_key(t.hyperparameters.values): t.message
                for t in self.trials.values() if t.status == FAILED}

    def progress(self) -> dict[str, dict]:
        scores, failed, outcomes = self.scores(), self.failed(), self.outcomes()
        return {c.key: cell_progress(self.sweep, c, scores, failed, outcomes) for c in self.sweep.cells()}

    def new_trial_id(self) -> str:
        """After the highest id ever used in the folder (keras-tuner counts the trials it could load, so
        one unreadable trial file made two trials share an id and overwrite each other)."""
        return f"{self._next_id:04d}"

    def trial_started(self, trial, new: bool) -> None:
        if new:
            self._next_id += 1
        self.started[trial.trial_id] = time.time()

    def populate_space(self, trial_id):
        busy = {trial_key(t.hyperparameters.values) for t in self.ongoing_trials.values()}
        todo = [item for prog in self.progress().values() for item in prog["todo"] if trial_key(item) not in busy]
        # A tuner that trains packed asks as <id>, <id>+1, ...: hand it more of the group it holds.
        base = str(self.asking).split("+")[0]
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
        return not self.ongoing_trials and not compat.oracle_has_retries(self) and not any(
            p["todo"] for p in self.progress().values())

    @kt.synchronized
    def end_trial(self, trial):
        """Keras Tuner's end_trial, with the crash reason a worker sent along (FAILURE_KEY)."""
        message = trial.hyperparameters.values.pop(FAILURE_KEY, None)
        if message is not None and trial.message is None:
            trial.message = message
        super().end_trial(trial)

    def score_trial(self, trial):
        trial.score = trial.metrics.get_last_value("score")
        trial.best_step = 0

    # Atomic writes: a kill -9 at any moment never leaves a torn JSON file behind. A write that fails is
    # kept for check_writes, never raised: Keras Tuner's lock around the oracle's calls is not released
    # by an exception, so one raised here (a gRPC thread's) left the chief blocked on it for good.
    def save(self):
        self._write(compat.oracle_file(self), self.get_state())

    def save_trial(self, trial):
        self._write(compat.oracle_trial_file(self, trial.trial_id), trial.get_state())

    def _write(self, path: Path, state) -> None:
        try:
            write_json_atomic(path, state)
        except OSError as e:
            self.write_error = self.write_error or unwritable(e, compat.oracle_project_dir(self).parent) or KbnError(
                f"cannot write {path}: {e.strerror or e}; fix it and run the same command to resume")

    def check_writes(self) -> None:
        """Raises the first write of the oracle's files that failed (the sweep stops, resumable)."""
        if self.write_error is not None:
            raise self.write_error

    def reload(self):
        """Rebuild the state from the trial files alone. Completed trials whose run folders are whole
        stay done; every other trial (interrupted, failed, or with a damaged run folder) runs again
        under its own id. An unreadable trial file is moved to tuner/damaged/ and said: its work is
        planned anew, under a new id."""
        trials, ids_seen = {}, [-1]
        project = compat.oracle_project_dir(self)
        cells = cells_by_key(self.sweep)
        for fname in sorted(glob.glob(os.path.join(project, "trial_*", "trial.json"))):
            folder = Path(fname).parent
            ids_seen += [int(folder.name.split("_")[1])] if folder.name.split("_")[1].isdigit() else []
            try:
                read_trial(Path(fname))  # checked as kbn wrote it: Trial.load takes anything
                t = trial_module.Trial.load(fname)
                values = t.hyperparameters.values
                known = values.get("cell") in cells
            except Exception as e:  # noqa: BLE001 - any unreadable file: Keras Tuner raises many kinds
                self._set_aside(folder, f"unreadable ({e if type(e) is ValueError else type(e).__name__})")
                continue
            if not known:
                self._set_aside(folder, f"for a cell this sweep does not have ({values.get('cell')})")
                continue
            off = off_plan(self.sweep, cells[values["cell"]], values)
            if off:
                self._set_aside(folder, f"not this sweep's work ({off})")
                continue
            if t.status == COMPLETED:
                _, check = check_trial_run(self.sweep, project.parent, values, cells)
                if check.damaged:
                    self.log(f"kbn: {folder.name}'s run is damaged ({check.problem}); it runs again")
                    t.status = Status.INVALID
            elif t.status == FAILED:
                self.log(f"kbn: {folder.name} failed last time ({failure_summary(t.message)}); it runs again")
                t.status = Status.INVALID
            trials[t.trial_id] = t
        damaged = glob.glob(os.path.join(project, "damaged", "trial_*"))
        ids_seen += [int(Path(d).name.split("_")[1].split("-")[0]) for d in damaged]
        self._next_id = max(ids_seen) + 1
        self.trials, ids = trials, sorted(trials)
        self.start_order = list(ids)
        self.end_order = [i for i in ids if trials[i].status == COMPLETED]
        self.ongoing_trials = {}
        self.tuner_ids = set()
        # create_trial pops from the end: reversed, so trials to redo run in id order.
        compat.oracle_reset_queues(self, [i for i in reversed(ids) if trials[i].status != COMPLETED])

    def _set_aside(self, folder: Path, why: str) -> None:
        dest = compat.oracle_project_dir(self) / "damaged" / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        dest.parent.mkdir(exist_ok=True)
        os.replace(folder, dest)
        self.log(f"kbn: tuner/{folder.name}/trial.json is {why}; moved to {dest}; its work is planned again")


class SweepTuner(base_tuner.BaseTuner):
    """Runs the trials the oracle hands out: each one is a `kbn.train` run."""

    def __init__(self, sweep: SweepConfig, logdir: str | Path, verbose: bool = True, log=console.say, pack: int = 1,
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
        if not compat.tuner_is_worker(self):
            self.oracle.reload()  # BaseTuner reloads only when tunerN.json exists; the trials are what count

    def save(self):
        if not compat.tuner_is_worker(self):
            self.oracle.save()
            self.oracle.check_writes()
        try:
            write_json_atomic(compat.tuner_file(self), self.get_state())
        except OSError as e:
            raise unwritable(e, self.logdir) or e from None

    def reload(self):
        if not compat.tuner_is_worker(self):
            self.oracle.reload()

    def on_trial_end(self, trial):
        """Keras Tuner's, except that a worker sends a failed trial's message along (FAILURE_KEY)."""
        carried = compat.tuner_is_worker(self) and trial.message is not None
        if carried:
            trial.hyperparameters.values[FAILURE_KEY] = trial.message
        try:
            super().on_trial_end(trial)
        finally:
            if carried:
                trial.hyperparameters.values.pop(FAILURE_KEY, None)

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

    def _metrics(self, res, compiled: float | None) -> dict:
        """What the oracle keeps of a trial: its score, accuracies, how it ended (0/1 per unstable kind,
        kbn.stability: the stable selection rule and the progress line read them), and `compiled`, the
        seconds this process spent compiling while it trained (None: not measured; the run's own
        compile_time, 0 for an old run's folder), for the ETA (Pace)."""
        m = res.metrics
        score = m["val_accuracy"] if self.sweep.select_on == "validation" else m["test_accuracy"]
        kind = res.outcome.kind if res.outcome is not None else ("diverged" if res.status == "diverged" else "trained")
        out = {"score": float(score), "val_accuracy": float(m["val_accuracy"]),
               "test_accuracy": float(m["test_accuracy"]), **outcome_metrics(kind),
               "compile_time": float(compiled if compiled is not None else m.get("compile_time") or 0.0)}
        if res.outcome is not None and res.outcome.fell_at is not None:
            out["fell_at"] = float(res.outcome.fell_at)
        return out

    @staticmethod
    def _keeps_model(trial) -> bool:
        return keeps_model(trial.hyperparameters.values)

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
        before = process_compile_seconds()
        res = train(cfg, folder, verbose=False, dataset=self._dataset(cfg), hparams=hparams,
                    protocol=self._protocol(trial), save_model=self._keeps_model(trial))
        self._metrics_of[trial.trial_id] = self._metrics(res, _since(before))
        return self._metrics_of[trial.trial_id]

    def _run_group(self, group) -> None:
        """Train one trial, or several of one cell and phase (learning rates or seeds differ) packed
        as one model, and record each as COMPLETED, or FAILED with the exception's first line. A
        KbnError is no training outcome (data gone, a bad setting, Ctrl-C): it stops the sweep, and the
        trials stay unfinished, to run on resume (Keras Tuner's FatalError, in kbn's terms)."""
        try:
            if len(group) == 1:
                results = [None]
                compat.run_and_update_trial(self, group[0])
            else:
                setups = [self._setup(t) for t in group]
                cfgs = [s[0] for s in setups]
                before = process_compile_seconds()
                results = train_many(cfgs, setups[0][1], verbose=False, dataset=self._dataset(cfgs[0]),
                                     hparams=[s[2] for s in setups], protocol=self._protocol(group[0]),
                                     save_model=self._keeps_model(group[0]))  # a group is of one phase
        except KbnError:
            raise
        except Exception as e:  # noqa: BLE001 - a crash is recorded and the sweep goes on with other cells
            if (stop := unwritable(e, self.logdir)) is not None:  # the folder, not the trial: stop, resumable
                raise stop from None
            first = (str(e).strip().splitlines() or [""])[0]
            message = f"{type(e).__name__}: {first}\n{traceback.format_exc()}"
            for t in group:
                t.status, t.message = Status.FAILED, message
            return
        for t, res in zip(group, results):
            if res is not None:  # each trial of a packed group says the group's compilation (Pace)
                self._metrics_of[t.trial_id] = self._metrics(res, _since(before))
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
        cell = self.cells[batch[0].hyperparameters.values["cell"]]
        while len(batch) < self.pack and packable(cell.arch, cell.optimizer):
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
        done0 = 0 if compat.tuner_is_worker(self) else len(self.oracle.scores())
        done, t_start, failed, pace = 0, time.perf_counter(), 0, Pace()
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
            # a packed group compiled once for all its trials: each trial's result says the group's seconds
            pace.ended(took * len(batch), max((self._metrics_of.get(t.trial_id) or {}).get("compile_time", 0.0)
                                             for t in batch))
            for trial in batch:
                self.on_trial_end(trial)
            if batch[0].hyperparameters.values["phase"] == "final" and not compat.tuner_is_worker(self):
                write_summary(self.logdir, self.log)  # a cell's final runs may have finished
            for trial in batch:
                done += 1
                failed += trial.status != Status.COMPLETED
                pace.work += trial_length(self.sweep, trial.hyperparameters.values["phase"])
                if self.verbose:
                    total, left = self._left(pace, done)
                    elapsed = time.perf_counter() - t_start
                    self._progress_line(trial, done0 + done, total, took, elapsed, left, len(batch))
        return failed

    def _left(self, pace: Pace, done_here: int) -> tuple[int, float]:
        """(trials planned, seconds left): the seconds per unit of training so far (compilation left
        out: Pace) times the training left, so that long final runs weigh as much as they take. A worker
        sees no plan: it counts trials (each as long as the average one so far)."""
        if compat.tuner_is_worker(self):
            total = planned_trials(self.sweep)
            return total, pace.left(max(total - done_here, 0) * pace.work / max(done_here, 1))
        progress = self.oracle.progress()
        return planned_trials(self.sweep, progress), pace.left(work_left(self.sweep, progress))

    def _progress_line(self, trial, n, total, took, elapsed, left, packed):
        metrics = self._metrics_of.pop(trial.trial_id, None)
        self.log(progress_line(self.sweep, trial, metrics, n, total, took, elapsed, left, packed))


def _since(before: float | None) -> float | None:
    return None if before is None else process_compile_seconds() - before


PROGRESS_WIDTH = 100  # a progress line never wraps on a 100-column terminal, nor in a log read at 100


def progress_line(sweep: SweepConfig, trial, metrics: dict | None, n, total, took, elapsed, left,
                  packed: int = 1) -> str:
    """One line per ended trial: what it trained, its score (test too for a final run) or why it
    failed, and the sweep's elapsed time and ETA. `metrics` as SweepTuner._metrics gives them."""
    v = trial.hyperparameters.values
    if trial.status == Status.COMPLETED and metrics:
        label = {"validation": "val", "test": "test"}[sweep.select_on]
        what = f"{label} {metrics['score']:.4f}"
        if v["phase"] == "final":
            what += f" test {metrics['test_accuracy']:.4f}"
        kind = outcome_kind(metrics)
        if kind != "trained":
            axis = "step" if sweep.eval_every_steps else "epoch"
            fell = metrics.get("fell_at")
            what += f" ({kind}" + (f" at {axis} {fell:g}" if fell is not None else "") + ")"
    else:
        what = f"FAILED: {failure_summary(trial.message)} (traceback in tuner/trial_{trial.trial_id}/trial.json)"
    seed = f" seed {v['seed']}" if v["phase"] == "final" else ""
    together = f" ({packed} packed)" if packed > 1 else ""
    head = f"[{n:>{len(str(total))}}/{total}] "
    trained = f" {v['phase']} lr {v['lr']:.4g}{seed}"
    ended = f" {what} {took:.1f} s{together} | {_hms(elapsed)}, ~{_hms(left)} left"
    cols = min(console.width(), PROGRESS_WIDTH)
    room = cols - len(head) - len(trained) - len(ended)
    if room >= min(len(v["cell"]), 16):  # the cell's key gives way in its middle: the score and ETA are read
        return head + console.fit_line(v["cell"], room) + trained + ended
    # a narrow terminal: what trained on one line, how it ended under it
    first = head + console.fit_line(v["cell"], max(8, cols - len(head) - len(trained))) + trained
    return first + "\n" + " " * len(head) + ended.lstrip()


def trial_metrics(trial) -> dict[str, float]:
    """A Keras Tuner trial's metrics by name, their last values (only those it has)."""
    return {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}


def outcome_metrics(kind: str) -> dict[str, float]:
    """A trial's outcome as the oracle's metrics: 0/1 per unstable kind (Keras Tuner keeps numbers)."""
    from kbn.stability import OUTCOMES

    return {k.replace(" ", "_"): float(kind == k) for k in OUTCOMES[1:]}


def outcome_kind(metrics: dict) -> str:
    """The outcome kind back from `outcome_metrics` (a trial made before kbn kept them: its diverged
    flag alone)."""
    from kbn.stability import OUTCOMES

    return next((k for k in OUTCOMES[1:] if metrics.get(k.replace(" ", "_"))), "trained")


def group_key(values: dict) -> tuple:
    """Trials with the same key differ only in learning rate and seed: they can train packed (the
    search's learning rates, or the final runs' seeds, each seed with its own data order)."""
    return values["cell"], values["phase"]


def _group_key(trial) -> tuple:
    return group_key(trial.hyperparameters.values)


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ---------------------------------------------------------------- running a sweep


def preflight(sweep: SweepConfig, pack: int = 1, verbose: bool = True) -> dict:
    """Everything a sweep can check before it trains, so a missing dataset or an impossible setting
    fails in one line at once, instead of as one failed trial per cell: every dataset loads (with its
    subset), every cell's network builds and its optimizer exists (a user's import strings are
    imported here), and packing works where asked (what cannot be packed trains unpacked, said once).
    Returns the datasets loaded, keyed as SweepTuner keeps them."""
    from kbn import models, optim, precision
    from kbn.packed import build_packed, cannot_pack

    datasets = {}
    for cell in sweep.cells():
        cfg = sweep.train_config(cell, sweep.some_lr(cell.optimizer), sweep.seeds[0], "coarse")
        try:
            ds = _load(datasets, cfg, verbose)
        except DataError as e:  # its several lines of how-to belong to `kbn data prepare`
            first = str(e).splitlines()[0].split(". Tried:")[0]
            if isinstance(e, DataFileError):  # a file of one's own, said in one line already
                raise
            raise DataError(f"{first}; `kbn data prepare {cfg.dataset}` says how to get it") from None
        for phase in ("coarse", "final"):  # the search's length and the final runs' may differ
            plan_schedule(sweep.train_config(cell, sweep.some_lr(cell.optimizer), sweep.seeds[0], phase),
                          len(ds.y_train))
        registry.user_components(cfg.to_dict())  # import strings: imported, checked, in one line each
        optim.make_optimizer(cfg.optimizer, cfg.lr)
        with precision.policy(cfg.precision):  # a user's output layer must stay float32 under it
            single = models.build(cfg.arch, ds.input_shape, ds.num_classes, cfg.norm, cfg.activation, cfg.depth,
                                  cfg.width)
        if pack > 1:
            why = cannot_pack(single, cfg.optimizer) if registry.get("arch", cfg.arch).packable else \
                f"network {cfg.arch} is not packable"
            if why is None:
                build_packed([single, single], [cfg.lr, cfg.lr], cfg.optimizer)
            elif verbose:
                console.say(f"kbn sweep: cell {cell.key} trains unpacked: {why}")
    return datasets


def _load(datasets: dict, cfg, verbose: bool):
    key = (cfg.dataset, cfg.subset)
    if key not in datasets:
        datasets[key] = kdata.load(cfg.dataset, cfg.data_dir, cfg.subset, verbose=verbose)
    return datasets[key]


def write_summary(logdir: Path, log) -> None:
    """The summary TensorBoard run and the answer scalars (kbn.tb_summary); a failure is said in one
    line and the sweep goes on: its runs are whole without them."""
    from kbn import tb_summary

    try:
        tb_summary.write(logdir)
    except (OSError, ValueError, ImportError) as e:
        log(f"kbn sweep: note: TensorBoard's summary run was not written ({type(e).__name__}: {e})")


def announce(sweep, logdir, oracle, log):
    """The sweep's opening lines: its cells and trials (how many already done), where its logs go, and
    a note when it has no 'none' arm to compare the norms with."""
    if "none" not in sweep.norms:
        log("kbn sweep: note: no 'none' arm in norms: the report will have nothing to compare the norms with")
    done = len(oracle.scores())
    arithmetic = "" if sweep.precision == "float32" else f" in {sweep.precision}"  # never on unsaid
    log(f"kbn sweep {sweep.name}: {len(sweep.cells())} cells, {planned_trials(sweep, oracle.progress())} trials "
        f"({done} already done){arithmetic}; logs in {logdir}; tensorboard --logdir {logdir}")

