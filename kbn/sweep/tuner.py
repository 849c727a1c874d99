"""The sweep's Keras Tuner tuner: it trains each trial the oracle (kbn.sweep.oracle) hands out as a
kbn run, packed where it can, and prints a line per trial; and the checks before a sweep trains
(`preflight`). kbn.sweep.runner's `run_sweep` runs it here or over workers (kbn.sweep.distribute).
It must not know how a trial trains beyond kbn.training.train's `train_many`, nor how the report
reads the results.

Folder of a sweep (`logs/<name>/` by default; its own files are kbn.sweep.folder's):
  sweep.json          the validated sweep file; resuming with a different one is refused
  components.json     a user's own components (import strings, npz files) and their files' sha256
  tuner/              the Keras Tuner project: oracle.json, trial_NNNN/trial.json
  search/coarse|fine/ the search trials, each a full kbn run folder (metrics.csv, TensorBoard, HParams)
  runs/               the final runs, one per seed: what reports read
  summary/            TensorBoard's summary runs (kbn.sweep.summary)
  .lock               held by the live sweep: a second one on the same folder is refused
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from keras_tuner.engine import base_tuner

from kbn import data as kdata
from kbn.core import compat, console, interrupts, registry
from kbn.core.clock import Pace, process_compile_seconds
from kbn.core.config import SweepConfig
from kbn.core.errors import DataError, DataFileError, KbnError
from kbn.models.packed import is_packable as packable
from kbn.runs.runlog import write_json_atomic
from kbn.runs.tboard import sweep_hparams
from kbn.training.train import plan_schedule, train, train_many
from kbn.sweep.folder import keeps_model, run_folder
from kbn.sweep.oracle import FAILURE_KEY, Status, SweepOracle, group_key, outcome_kind, outcome_metrics, unwritable
from kbn.sweep.plan import planned_trials, trial_length, work_left
from kbn.sweep.status import failure_summary


class NoTunerModels(KbnError, NotImplementedError):
    """Keras Tuner's get_best_models on kbn's tuner: the models are the final runs' model.keras."""


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
        kbn.core.stability: the stable selection rule and the progress line read them), and `compiled`, the
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


def _group_key(trial) -> tuple:
    return group_key(trial.hyperparameters.values)


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def preflight(sweep: SweepConfig, pack: int = 1, verbose: bool = True) -> dict:
    """Everything a sweep can check before it trains, so a missing dataset or an impossible setting
    fails in one line at once, instead of as one failed trial per cell: every dataset loads (with its
    subset), every cell's network builds and its optimizer exists (a user's import strings are
    imported here), and packing works where asked (what cannot be packed trains unpacked, said once).
    Returns the datasets loaded, keyed as SweepTuner keeps them."""
    from kbn import models
    from kbn.models import optimizers as optim, precision
    from kbn.models.packed import build_packed, cannot_pack

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
    """The summary TensorBoard run and the answer scalars (kbn.sweep.summary); a failure is said in one
    line and the sweep goes on: its runs are whole without them."""
    from kbn.sweep import summary

    try:
        summary.write(logdir)
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
