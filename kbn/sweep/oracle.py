"""The sweep's Keras Tuner oracle: per cell, a coarse learning-rate grid, a fine grid around its
winner, then the chosen learning rate trained once per seed, all as trials of one Keras Tuner project.

Every step of every cell is a Keras Tuner trial with hyperparameters {cell, phase, lr, seed}, handed out
by `SweepOracle`. The oracle keeps no plan of its own: what is left to do is derived from the trials
on disk each time it is asked (kbn.sweep.plan), which is what makes a sweep resumable after `kill -9`
(keras-tuner 1.4.8's own GridSearchOracle is not: keras-team/keras-tuner#1055) and lets Keras Tuner's
chief/worker mode spread one sweep over several processes or machines (kbn.sweep.distribute). Files
are written atomically. It must not train, nor know how the report reads the results.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import keras_tuner as kt
from keras_tuner.engine import trial as trial_module

from kbn.core import compat, console
from kbn.core.config import SweepConfig, cells_by_key, off_plan
from kbn.core.errors import KbnError
from kbn.runs.runlog import write_json_atomic
from kbn.sweep import trials
from kbn.sweep.folder import check_trial_run
from kbn.sweep.plan import COMPLETED, FAILED, cell_progress, score_value, trial_key
from kbn.sweep.status import failure_summary


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
        """How each completed trial ended (kbn.core.stability's kinds), from its metrics."""
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
        loaded, ids_seen = {}, [-1]
        project = compat.oracle_project_dir(self)
        cells = cells_by_key(self.sweep)
        for fname in trials.trial_files(project):
            folder = fname.parent
            ids_seen += [int(folder.name.split("_")[1])] if folder.name.split("_")[1].isdigit() else []
            try:
                trials.read_trial(fname)  # checked as kbn wrote it: Trial.load takes anything
                t = trial_module.Trial.load(str(fname))
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
            loaded[t.trial_id] = t
        damaged = (project / "damaged").glob("trial_*")
        ids_seen += [int(d.name.split("_")[1].split("-")[0]) for d in damaged]
        self._next_id = max(ids_seen) + 1
        self.trials, ids = loaded, sorted(loaded)
        self.start_order = list(ids)
        self.end_order = [i for i in ids if loaded[i].status == COMPLETED]
        self.ongoing_trials = {}
        self.tuner_ids = set()
        # create_trial pops from the end: reversed, so trials to redo run in id order.
        compat.oracle_reset_queues(self, [i for i in reversed(ids) if loaded[i].status != COMPLETED])

    def _set_aside(self, folder: Path, why: str) -> None:
        dest = compat.oracle_project_dir(self) / "damaged" / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        dest.parent.mkdir(exist_ok=True)
        os.replace(folder, dest)
        self.log(f"kbn: tuner/{folder.name}/trial.json is {why}; moved to {dest}; its work is planned again")


def trial_metrics(trial) -> dict[str, float]:
    """A Keras Tuner trial's metrics by name, their last values (only those it has)."""
    return {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}


def outcome_metrics(kind: str) -> dict[str, float]:
    """A trial's outcome as the oracle's metrics: 0/1 per unstable kind (Keras Tuner keeps numbers)."""
    from kbn.core.stability import OUTCOMES

    return {k.replace(" ", "_"): float(kind == k) for k in OUTCOMES[1:]}


def outcome_kind(metrics: dict) -> str:
    """The outcome kind back from `outcome_metrics` (a trial made before kbn kept them: its diverged
    flag alone)."""
    from kbn.core.stability import OUTCOMES

    return next((k for k in OUTCOMES[1:] if metrics.get(k.replace(" ", "_"))), "trained")


def group_key(values: dict) -> tuple:
    """Trials with the same key differ only in learning rate and seed: they can train packed (the
    search's learning rates, or the final runs' seeds, each seed with its own data order)."""
    return values["cell"], values["phase"]
