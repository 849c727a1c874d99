"""One training run, fully logged: the unit every sweep and report is built from. Several runs of
one cell that differ only in learning rate and seed can train packed into one model (kbn.models.packed), each
still logged as its own run.
It must not know sweeps, search phases or the report: a list of TrainConfig in, logged runs out.

The run proceeds in *periods*: one epoch each, or `eval_every_steps` optimizer steps (the poster's
"test accuracy every 5,000 steps"), with extra evaluations at `eval_steps` (dense early points where the
curves move). With `probe_preactivations`, each evaluation also logs the hidden layers' pre-activation
percentiles on a fixed validation batch (PreactivationProbe; Ioffe & Szegedy's Fig. 1b-c). With
`bn_statistics = "population"` batch norm evaluates with statistics recomputed before every evaluation
(kbn.training.bn_stats), else with Keras's moving averages. The training
order comes from a seeded permutation stream, so the same seed gives the same numbers. After each
period: validation (and test where asked) is evaluated, a row goes to metrics.csv and TensorBoard, and
progress is printed. A NaN/inf loss ends the run as
*diverged* (a result, not a crash). Each row carries the run's cumulative training and compile
seconds beside its wall time (kbn.core.clock): the training seconds are what a report and an ETA use.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np

from kbn import data as kdata, models
from kbn.core import compat, console, interrupts, registry, stability
from kbn.core.clock import COMPILE_METHODS, FirstCalls, RunClock, process_compile_seconds
from kbn.core.config import SETTING_DEFAULTS, TrainConfig
from kbn.core.errors import ConfigError
from kbn.core.version import __version__
from kbn.models import optimizers as optim, precision
from kbn.models.packed import build_packed, cannot_pack, trial_logs
from kbn.runs.runlog import MODEL_FILE, RunLog, check_run, is_finite
from kbn.runs.tboard import HParams, run_hparams
from kbn.training import handoff
from kbn.training.backend import (enable_compile_cache, fast_compile_args, fuse_batch_norm, handoff_wanted,
                                  jax_loop_enabled, keep_tensorflow_out, keras_input, train_path)
from kbn.training.bn_stats import PopulationStatistics, describe
from kbn.training.callbacks import CallTimer, Heartbeat, StopOnInterrupt, StopOnNonFinite
from kbn.training.jax_loop import JaxEvaluation, JaxOutputs, JaxPeriods

EVAL_BATCH = 1000
# What metrics.csv's train_time counts (config.json says it with the run).
TRAIN_TIME = ("seconds spent in training periods (the optimizer's steps and their metrics), compilation, "
              "evaluations, the probe and logging excluded")


@dataclasses.dataclass
class RunResult:
    folder: Path
    status: str  # finished | diverged
    metrics: dict
    skipped: bool = False  # True when an identical finished run was found and not redone
    outcome: stability.Outcome | None = None  # trained, diverged, collapsed or never learned (kbn.core.stability)


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version(), "kbn": __version__}
    for pkg in ("keras", "tensorflow", "jax", "jaxlib", "keras-tuner", "tensorflow-datasets", "numpy", "tensorboard"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


class IndexStream:
    """Training example order: epoch after epoch of seeded permutations, taken in any chunk size."""

    def __init__(self, n: int, seed: int):
        self.n, self._rng, self._buf = n, np.random.default_rng(seed), np.empty(0, dtype=np.int64)

    def take(self, m: int) -> np.ndarray:
        while len(self._buf) < m:
            self._buf = np.concatenate([self._buf, self._rng.permutation(self.n)])
        out, self._buf = self._buf[:m], self._buf[m:]
        return out


def _per_trial(logs: dict, k: int, prefix: str = "") -> list[dict]:
    if k == 1:
        return [{"loss": logs.get(prefix + "loss"), "accuracy": logs.get(prefix + "accuracy")}]
    return trial_logs(logs, k, prefix)


def _evaluate(model, x, y, k: int, compiled: JaxEvaluation | None = None,
              calls: FirstCalls | None = None) -> list[tuple[float, float]]:
    """(loss, accuracy) per trial on (x, y); `compiled`: the same as one compiled loop (JAX); else
    Keras's evaluate, its calls timed into `calls`."""
    if compiled is not None:
        r = compiled.evaluate(x, y)
    else:
        timer = [CallTimer(calls, "test", _sizes(len(y), EVAL_BATCH), model.steps_per_execution)] if calls else []
        r = model.evaluate(**keras_input(x, y if k == 1 else [y] * k, EVAL_BATCH), verbose=0, return_dict=True,
                           callbacks=timer)
    return [(float(t["loss"]), float(t["accuracy"])) for t in _per_trial(r, k)]


def _sizes(n: int, batch_size: int) -> list[int]:
    """The batch sizes Keras cuts n examples into."""
    return [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])


def _fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)


def train(cfg: TrainConfig, logdir: str | Path, overwrite: bool = False, verbose: bool = True,
          dataset: kdata.Dataset | None = None, log=console.say, hparams: HParams | None = None,
          protocol: dict | None = None, save_model: bool = True) -> RunResult:
    """Train `cfg` into `logdir/<run name>/`; a finished identical run is returned, not redone.
    With `save_model` the trained network is kept as `model.keras` in the run folder (MODEL_FILE)."""
    return train_many([cfg], logdir, overwrite, verbose, dataset, log, [hparams], protocol=protocol,
                      save_model=save_model)[0]


def initial_model(cfg: TrainConfig, ds: kdata.Dataset) -> keras.Model:
    """The network `cfg` trains, with the initial weights its seed gives. Paired arms: the norm layers
    draw no random numbers (ones and zeros), so at one seed the runs with and without a norm start from
    the same kernels and biases in every layer both have, and see the same data order (IndexStream):
    their difference is the norm's effect, not the luck of the draw."""
    keep_tensorflow_out()
    enable_compile_cache()  # before the first compilation
    keras.utils.set_random_seed(cfg.seed)
    with precision.policy(cfg.precision):  # its layers keep the policy; the process does not
        return models.build(cfg.arch, ds.input_shape, ds.num_classes, cfg.norm, cfg.activation, cfg.depth,
                            cfg.width, cfg.init)


def _packable(cfgs: list[TrainConfig]) -> None:
    first = cfgs[0].to_dict()
    for c in cfgs[1:]:
        diff = sorted(k for k, v in c.to_dict().items() if k not in ("lr", "seed") and v != first[k])
        if diff:
            raise ValueError(f"packed runs must differ only in lr and seed; these differ in {diff}")
    if len({(c.lr, c.seed) for c in cfgs}) != len(cfgs):
        raise ValueError("packed runs need distinct (learning rate, seed) pairs")


# Where the data was read from, not what trained: a run read from another copy is the same run.
NOT_COMPARED = ("data_dir",)


def _changed(old: dict, new: dict) -> list[str]:
    old = {**SETTING_DEFAULTS, **old}
    keys = [k for k in new | old if k not in NOT_COMPARED and old.get(k, "absent") != new.get(k, "absent")]
    return [f"{k} {old.get(k, 'absent')} -> {new.get(k, 'absent')}" for k in keys]


def _reusable(cfg: TrainConfig, folder: Path, verbose: bool, log, save_model: bool) -> RunResult | None:
    """The finished run in `folder` when it trained exactly `cfg`; None when it must be (re)done.
    The folder name leaves out settings such as epochs, so a finished run with other settings is
    refused rather than returned as this one's result. With `save_model` a run whose model.keras is
    lost is redone."""
    check = check_run(folder, model=save_model)
    if check.damaged:
        if verbose:
            log(f"kbn: {folder} is damaged ({check.problem}); training it again")
        return None
    if check.result is None:
        return None
    changed = _changed(check.config.get("settings", {}), cfg.to_dict())
    module_changed = registry.changed_components(check.config.get("components", {}),
                                                 registry.user_components(cfg.to_dict()))
    if module_changed:
        raise ConfigError(f"logdir: {folder}: {module_changed}")
    if changed:
        raise ConfigError(f"logdir: {folder} holds a finished run with other settings ({', '.join(changed)}); "
                          "use --overwrite to redo it, or another --logdir")
    if verbose:
        log(f"kbn: {folder} already finished ({check.result['status']}); not redone (use --overwrite to redo)")
    return RunResult(folder, check.result["status"], check.result["metrics"], skipped=True, outcome=check.outcome)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a run trains and evaluates: `periods` trainings, each ended by an evaluation; with
    `eval_at` (step-based runs) period p ends at step eval_at[p], else every period is one epoch."""

    steps_per_epoch: int
    total_steps: int
    periods: int
    period_steps: int  # the shortest period's steps: a compiled call never spans more
    eval_at: list[int] | None

    def steps_of(self, p: int, step: int) -> int:
        """The steps of period `p`, which starts after `step` steps."""
        return self.eval_at[p] - step if self.eval_at else self.steps_per_epoch

    def as_dict(self) -> dict:
        return {"steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps, "periods": self.periods}


def plan_schedule(cfg: TrainConfig, n: int) -> Schedule:
    """`cfg`'s periods and evaluation points over `n` training examples; ConfigError for a batch larger
    than the training set or evaluations spaced beyond the run's end (the run would not be what was asked)."""
    if cfg.batch_size > n:
        raise ConfigError(f"batch_size: {cfg.batch_size} is more than the {n} training examples of {cfg.dataset}; "
                          "every step would see them all: give a smaller batch_size")
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    if not cfg.eval_every_steps:
        return Schedule(steps_per_epoch, cfg.epochs * steps_per_epoch, cfg.epochs, steps_per_epoch, None)
    total_steps = cfg.total_steps or cfg.epochs * steps_per_epoch
    if cfg.eval_every_steps > total_steps:  # total_steps given: TrainConfig already refused it
        raise ConfigError(f"eval_every_steps: {cfg.eval_every_steps} is more than the run's {total_steps} steps "
                          f"({cfg.epochs} epoch(s) of {steps_per_epoch} steps: {n} examples, batch {cfg.batch_size}); "
                          "it would evaluate only at the end: give a smaller eval_every_steps, or total_steps")
    eval_at = cfg.eval_points(total_steps)
    period_steps = min(b - a for a, b in zip([0] + eval_at, eval_at))
    return Schedule(steps_per_epoch, total_steps, len(eval_at), period_steps, eval_at)


def _todo(cfgs, logdir, overwrite, verbose, log, save_model) -> tuple[list[RunResult | None], list[int]]:
    """The finished identical runs found (by position) and the positions still to train."""
    results: list[RunResult | None] = [None] * len(cfgs)
    todo = []
    for i, cfg in enumerate(cfgs):
        done = None if overwrite else _reusable(cfg, Path(logdir) / cfg.run_name(), verbose, log, save_model)
        if done is not None:
            results[i] = done
        else:
            todo.append(i)
    return results, todo


def train_many(cfgs: list[TrainConfig], logdir: str | Path, overwrite: bool = False, verbose: bool = True,
               dataset: kdata.Dataset | None = None, log=console.say, hparams: list | None = None,
               steps_per_execution: int | None = None, protocol: dict | None = None,
               save_model: bool = True) -> list[RunResult]:
    """Train runs of one cell that differ only in learning rate and seed, packed into one model when
    there are several (each keeps its own weights, statistics, optimizer state, data order and logs).
    `protocol` (a sweep's: how its learning rate was chosen, the phase) goes into config.json.
    `steps_per_execution`: the most steps one compiled call runs (default: kbn.training.backend.train_path's).
    `save_model`: each finished run keeps its own trained network as `model.keras` (a sweep asks for it
    in final runs only: search trials would cost disk for nothing)."""
    _packable(cfgs)
    hparams = hparams or [None] * len(cfgs)
    results, todo = _todo(cfgs, logdir, overwrite, verbose, log, save_model)
    if not todo:
        return results
    cfg = cfgs[todo[0]]
    components = registry.user_components(cfg.to_dict())  # a user's import strings, before any training
    ds = dataset if dataset is not None else kdata.load(cfg.dataset, cfg.data_dir, cfg.subset, verbose=verbose)
    plan_schedule(cfg, len(ds.y_train))  # a batch or evaluation spacing the data cannot give: before any build
    singles = [initial_model(cfgs[i], ds) for i in todo]  # packed: each trial from its own seed's weights
    why = handoff_wanted(train_path(singles[0]), cfgs)
    if why:  # a conv net in a JAX process on a CPU: TensorFlow trains it 3-4x faster, in a child
        handed = handoff.train_in_tensorflow(
            why, log, cfgs=[cfgs[i] for i in todo], logdir=logdir, overwrite=overwrite, verbose=verbose, dataset=ds,
            hparams=[hparams[i] for i in todo], steps_per_execution=steps_per_execution, protocol=protocol,
            save_model=save_model)
        for i, result in zip(todo, handed):
            results[i] = result
        return results
    why = cannot_pack(singles[0], cfg.optimizer) if len(todo) > 1 else None
    if why:
        if verbose:
            log(f"kbn: {cfg.run_name()} and {len(todo) - 1} more train one by one, unpacked: {why}")
        for i in todo:
            results[i] = train_many([cfgs[i]], logdir, overwrite, verbose, ds, log, [hparams[i]], steps_per_execution,
                                    protocol, save_model)[0]
        return results
    trials = _Trials.start([cfgs[i] for i in todo], singles, ds, logdir, [hparams[i] for i in todo],
                           steps_per_execution, protocol, components, verbose, log)
    for i, result in zip(todo, trials.run(save_model)):
        results[i] = result
    return results


def _compile(cfgs: list[TrainConfig], singles: list[keras.Model], ds: kdata.Dataset, spe: int, own_orders: bool):
    """(the model that trains, the model that evaluates, the Packed or None): one run's network compiled
    with its optimizer, or several runs packed into one model."""
    cfg = cfgs[0]
    if len(cfgs) == 1:
        single = singles[0]
        single.compile(optimizer=optim.make_optimizer(cfg.optimizer, cfg.lr), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy"], **fast_compile_args(spe, single))
        return single, single, None
    packed = build_packed(singles, [c.lr for c in cfgs], cfg.optimizer, steps_per_execution=spe,
                          train_examples=ds.x_train if own_orders else None)
    return packed.train, packed.evaluate, packed


def _rate_verified(components: dict, cfg: TrainConfig, model: keras.Model) -> dict:
    """A user's optimizer with `lr_verified` added: whether its learning rate read as cfg.lr (one that
    reads otherwise was refused when it was made). Unreadable: said on stderr, even with -q, since
    config.json and metrics.csv then record a rate kbn cannot vouch for."""
    if "optimizer" not in components or model.optimizer is None:
        return components
    verified = registry.get("optimizer", cfg.optimizer).rate_verified(model.optimizer, cfg.lr)
    if not verified:
        rate = compat.optimizer_lr_variable(model.optimizer)
        console.warn(f"kbn: warning: optimizer {cfg.optimizer!r}: its learning rate is a {type(rate).__name__}, not "
                     f"the {cfg.lr:g} asked for; config.json and metrics.csv record {cfg.lr:g}, which kbn cannot vouch "
                     "for (config.json: lr_verified false)")
    return {**components, "optimizer": {**components["optimizer"], "lr_verified": verified}}


def _run_metadata(cfg: TrainConfig, ds: kdata.Dataset, model: keras.Model, components: dict, schedule: Schedule,
                  spe: int, k: int, own_orders: bool, protocol: dict | None, path: dict) -> dict:
    """What every packed run's config.json says alike: environment, the training path and why, data,
    network, schedule, what batch norm evaluates with, how its seconds are measured, command."""
    method = "explicit" if path["loop"] == "kbn" else "jax events" if keras.backend.backend() == "jax" else "first calls"
    return {
        "backend": keras.backend.backend(),
        "path": path,
        "versions": versions(),
        "data": {"source": ds.source, "sizes": ds.sizes(), "input_shape": list(ds.input_shape),
                 "num_classes": ds.num_classes, "validation_fraction": ds.validation_fraction},
        "components": components,
        "model": {"name": model.name, "params": model.count_params()},
        "precision": precision.describe(model, cfg.precision),
        "schedule": {**schedule.as_dict(), "steps_per_execution": spe, "packed_with": k,
                     "own_data_orders": own_orders, **({"eval_at": schedule.eval_at} if schedule.eval_at else {})},
        "protocol": protocol,
        "bn_statistics": describe(model, cfg.bn_statistics, cfg.bn_batches, cfg.batch_size),
        "timing": {"wall_time": "seconds since the first period began", "train_time": TRAIN_TIME,
                   "compile_time": f"{method}: {COMPILE_METHODS[method]}"},
        "command": sys.argv,
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _open_runlog(cfg: TrainConfig, logdir, hparams: HParams | None, shared: dict) -> RunLog:
    settings = cfg.to_dict()
    runlog = RunLog(Path(logdir) / cfg.run_name(), axis="step" if cfg.eval_every_steps else "epoch")
    # a run of its own is a session named by its path under logdir; a sweep names its trials' sessions
    runlog.start({**shared, "settings": settings, "run": runlog.folder.name},
                 hparams or run_hparams(settings, session=cfg.run_name()))
    return runlog


def _probe(cfg: TrainConfig, ds: kdata.Dataset, evaluator, single, k: int, packed: bool, calls: FirstCalls | None):
    """The PreactivationProbe `cfg` asks for, or None; `calls`: Keras's predict timed into it (else
    JAX's compiled program)."""
    if not cfg.probe_preactivations:
        return None
    if cfg.probe_preactivations > len(ds.y_validation):
        raise ConfigError(f"probe_preactivations: {cfg.probe_preactivations} is more than the {len(ds.y_validation)} "
                          f"validation images of {cfg.dataset}")
    return PreactivationProbe(evaluator, single, ds.x_validation[: cfg.probe_preactivations], k, packed, calls)


@dataclasses.dataclass
class _Trials:
    """K runs of one cell training together (K = 1: a run of its own), their logs and outcomes."""

    cfgs: list[TrainConfig]
    singles: list[keras.Model]
    ds: kdata.Dataset
    schedule: Schedule
    model: keras.Model
    evaluator: keras.Model
    packed: object  # a kbn.models.packed Packed, or None
    own_orders: bool  # seeds differ: each trial its own data order
    runlogs: list[RunLog]
    probe: PreactivationProbe | None
    periods: JaxPeriods | None  # JAX: each period as compiled loops; else Keras's fit
    evaluation: JaxEvaluation | None  # JAX: evaluations as compiled loops; else Keras's evaluate
    population: PopulationStatistics | None  # bn_statistics population: set before every evaluation
    verbose: bool
    log: object
    last_tb_step: int = 0  # TensorBoard's step of the last evaluation: where a run's outcome is logged
    clock: RunClock = dataclasses.field(default_factory=RunClock)
    calls: FirstCalls | None = None  # TensorFlow: Keras's own calls, timed to estimate compilation
    train_spans: list = dataclasses.field(default_factory=list)  # each period's training seconds, compiling included

    @classmethod
    def start(cls, cfgs, singles, ds, logdir, hparams, steps_per_execution, protocol, components, verbose, log):
        """Compile, write each run's config.json and open its logs."""
        cfg, k = cfgs[0], len(cfgs)
        schedule = plan_schedule(cfg, len(ds.y_train))
        # Several steps per compiled call: no per-step Python between them (kbn.tools.bench measures the gain).
        # fit's calls stop at a period's end; the JAX loop's count is traced, so its chunk need not.
        path = train_path(singles[0])  # read from the built network: its convolutions, not its name
        chunk = steps_per_execution or path["steps_per_call"]
        spe = max(1, min(chunk, schedule.period_steps))
        own_orders = len({c.seed for c in cfgs}) > 1
        model, evaluator, packed = _compile(cfgs, singles, ds, spe, own_orders)
        fused = fuse_batch_norm(model)  # TensorFlow: batch norm as one fused kernel
        if fused:
            path = {**path, "fused_batch_norm": fused, "reason": f"{path['reason']}; batch norm fused (FusedBatchNormV3)"}
        path = handoff.received(path)  # a JAX process handed these runs over: said with the path
        if verbose:
            log(f"kbn: {cfg.run_name()}: {path['backend']}, {path['loop']} loop: {path['reason']}")
        components = _rate_verified(components, cfg, model)
        loop = path["loop"] == "kbn"
        shared = _run_metadata(cfg, ds, singles[0], components, schedule, chunk if loop else spe, k, own_orders,
                               protocol, path)
        runlogs = [_open_runlog(c, logdir, hp, shared) for c, hp in zip(cfgs, hparams)]
        calls = FirstCalls() if keras.backend.backend() != "jax" else None  # estimated on TensorFlow only
        probe = _probe(cfg, ds, evaluator, singles[0], k, packed is not None, calls)
        periods = evaluation = None
        if loop:
            periods = JaxPeriods(model, ds.x_train, ds.y_train, k, own_orders, cfg.batch_size, chunk)
            evaluation = JaxEvaluation(evaluator, EVAL_BATCH, k)
        population = None
        if cfg.bn_statistics == "population":  # on shared images: every trial over the same batches
            population = PopulationStatistics(evaluator, ds.x_train, cfg.bn_batches, cfg.batch_size)
        return cls(cfgs, singles, ds, schedule, model, evaluator, packed, own_orders, runlogs, probe, periods,
                   evaluation, population, verbose, log, calls=calls)

    def run(self, save_model: bool) -> list[RunResult]:
        """Train to the end and close every run's logs; a run left unfinished (an exception, Ctrl-C)
        keeps no result.json."""
        outcomes: list[dict | None] = [None] * len(self.cfgs)
        try:
            self._loop(outcomes)
            if self.population is not None:  # the pack's recomputations together (in wall_time too)
                for o in outcomes:
                    o["metrics"]["bn_population_seconds"] = round(self.population.seconds, 3)
                    o["metrics"]["bn_population_compile_seconds"] = round(self.population.compile_seconds, 3)
            if save_model:
                _save_models(self.cfgs, self.singles, self.packed, self.runlogs, outcomes, self.ds)
        except BaseException:
            if save_model:  # a finished run promises its model.keras: without it, the run stays unfinished
                outcomes[:] = [o if o is not None and o["status"] == "diverged" else None for o in outcomes]
            raise
        finally:
            for runlog, outcome in zip(self.runlogs, outcomes):
                runlog.close(outcome, self.last_tb_step)  # None (an exception, Ctrl-C): the folder stays unfinished
        return [RunResult(r.folder, o["status"], o["metrics"], outcome=stability.Outcome.from_dict(o["outcome"]))
                for r, o in zip(self.runlogs, outcomes)]

    def _loop(self, outcomes: list) -> None:
        """Train all trials together, period by period; a trial whose loss turns NaN/inf is closed as
        diverged while the others go on. Fills `outcomes` (one result dict per trial)."""
        k, n = len(self.cfgs), len(self.ds.y_train)
        orders = [IndexStream(n, c.seed) for c in (self.cfgs if self.own_orders else self.cfgs[:1])]
        stopper = StopOnNonFinite(k)
        step, t0 = 0, time.perf_counter()
        alive = list(range(k))
        rows = [[] for _ in range(k)]  # each trial's metrics.csv rows: its outcome is read off them
        for p in range(self.schedule.periods):
            if self.calls is not None:
                self.calls.period = p
            steps = self.schedule.steps_of(p, step)
            train_logs = self._timed("train", self._train_period, p, steps, orders, stopper)
            step += steps
            diverged = [j for j in alive if stopper.diverged[j] or not is_finite(train_logs[j]["loss"])]
            healthy = [j for j in alive if j not in diverged]
            val, test = self._timed("evaluate", self._evaluate, p, step, healthy)
            elapsed = round(time.perf_counter() - t0, 3)
            for j in alive:
                rows[j].append(self._row(j, p, step, train_logs[j], val, test, j in diverged, elapsed))
                self._revise(j, rows[j])
            self.last_tb_step = step if self.cfgs[0].eval_every_steps else p + 1
            for j in diverged:
                outcomes[j] = self._outcome("diverged", rows[j], step)
            alive = healthy
            if not alive:
                break
        for j in alive:
            outcomes[j] = self._outcome("finished", rows[j], step)

    def _outcome(self, status: str, rows: list[dict], step: int) -> dict:
        axis = "step" if self.cfgs[0].eval_every_steps else "epoch"
        how = stability.of_rows(rows, 1 / self.ds.num_classes, status == "diverged", axis)
        return _outcome(status, rows[-1], step, self.ds.num_classes, how)

    def _timed(self, part: str, fn, *args):
        """fn(*args), its seconds added to the clock's `part` ("train" or "evaluate") less the
        compilation done meanwhile."""
        t0, before = time.perf_counter(), self._compiled(part)
        out = fn(*args)
        took = time.perf_counter() - t0
        self.clock.add(part, took, self._compiled(part) - before)
        if part == "train":
            self.train_spans.append(took)
        return out

    def _seconds(self, p: int) -> dict:
        """metrics.csv's cumulative train_time and compile_time after period `p`, as known now. On
        TensorFlow a period's compilation is known once its kind has a warm call (FirstCalls), often a
        period later: asked again then, an earlier row gets the seconds that are really its own."""
        if self.calls is None:  # JAX: timed as it happened, so only the current period's are asked for
            return {"train_time": round(self.clock.train, 3), "compile_time": round(self.clock.compile, 3)}
        compiled = {kind: self.calls.seconds(kind, upto=p) for kind in ("train", "test", "predict")}
        return {"train_time": round(max(0.0, sum(self.train_spans[: p + 1]) - compiled["train"]), 3),
                "compile_time": round(sum(compiled.values()), 3)}

    def _revise(self, j: int, rows: list[dict]) -> None:
        """Trial j's earlier rows with the seconds known now; metrics.csv rewritten where one changed.
        (JAX's seconds are timed as they happen: nothing to revise.)"""
        if self.calls is None:
            return
        changed = False
        for p, row in enumerate(rows[:-1]):
            now = self._seconds(p)
            if any(row[k] != v for k, v in now.items()):
                row.update(now)
                changed = True
        if changed:
            self.runlogs[j].rewrite(rows)

    def _compiled(self, part: str) -> float:
        """Seconds spent compiling so far for training or for evaluating (the probe's included), or
        by the whole process (fit's path on JAX): what grows while `part` runs is its compilation."""
        if self.periods is None:
            compiled = process_compile_seconds()
            if compiled is not None:
                return compiled
            kinds = ("train",) if part == "train" else ("test", "predict")  # TensorFlow: estimated
            return sum(self.calls.seconds(kind) for kind in kinds)
        if part == "train":
            return self.periods.compile_seconds
        return self.evaluation.compile_seconds + (self.probe.compile_seconds if self.probe else 0.0)

    def _train_period(self, p: int, steps: int, orders: list[IndexStream], stopper) -> list[dict]:
        """One period's training (`steps` steps); per trial, its last loss and accuracy. With own_orders
        the model takes (examples, K) indices: column j is trial j's order, the one its seed gives alone."""
        cfg, k, ds = self.cfgs[0], len(self.cfgs), self.ds
        count = steps * cfg.batch_size if cfg.eval_every_steps else len(ds.y_train)
        idx = np.stack([o.take(count) for o in orders], axis=1)  # (count, 1 or K)
        callbacks = [stopper, StopOnInterrupt()]
        if self.verbose:
            callbacks.append(Heartbeat(self.runlogs[0].folder.name if k == 1 else f"{k} packed runs", steps))
        if self.periods is not None:
            logs = self.periods.train(idx, callbacks, p)
            interrupts.check()
            return _per_trial(logs, k)
        if self.own_orders:
            x, y = idx.astype(np.int32), [ds.y_train[idx[:, j]] for j in range(k)]
        else:
            x, y = ds.x_train[idx[:, 0]], ds.y_train[idx[:, 0]]
            y = y if k == 1 else [y] * k
        timer = [CallTimer(self.calls, "train", _sizes(count, cfg.batch_size), self.model.steps_per_execution)] \
            if self.calls else []
        hist = self.model.fit(**keras_input(x, y, cfg.batch_size), epochs=p + 1, initial_epoch=p, shuffle=False,
                              verbose=0, callbacks=callbacks + timer)
        interrupts.check()  # before anything of an unfinished period is logged
        return _per_trial({key: v[-1] for key, v in hist.history.items()}, k)

    def _evaluate(self, p: int, step: int, healthy: list[int]):
        """(validation, test) per trial after period `p`, None where not evaluated; the probe's
        pre-activations logged (its time counts as the evaluations' does: not training time). With
        bn_statistics population, batch norm's statistics are recomputed first (kbn.training.bn_stats)."""
        if not healthy:
            return None, None
        cfg, k, ds = self.cfgs[0], len(self.cfgs), self.ds
        calls = self.calls
        if self.population is not None:  # validation, test and the probe all see these statistics
            self.population.update()
        val = _evaluate(self.evaluator, ds.x_validation, ds.y_validation, k, self.evaluation, calls)
        test_each = cfg.test_every_epoch or cfg.eval_every_steps is not None
        is_last = p == self.schedule.periods - 1
        test = _evaluate(self.evaluator, ds.x_test, ds.y_test, k, self.evaluation, calls) \
            if test_each or is_last else None
        if self.probe is not None:
            for j, layers_of_j in enumerate(self.probe.measure()):
                if j in healthy:
                    self.runlogs[j].preactivations(layers_of_j, step if cfg.eval_every_steps else p + 1)
        return val, test

    def _row(self, j: int, p: int, step: int, train: dict, val, test, diverged: bool, elapsed: float) -> dict:
        """Trial j's metrics.csv row after period `p`, logged and printed."""
        cfg, n = self.cfgs[0], len(self.ds.y_train)
        row = {
            "epoch": round(step * cfg.batch_size / n, 4) if cfg.eval_every_steps else p + 1,
            "step": step, "loss": train["loss"], "accuracy": train["accuracy"],
            "lr": self.cfgs[j].lr, "wall_time": elapsed, **self._seconds(p),
        }
        if diverged:
            row["loss"] = float("nan")
        else:
            row["val_loss"], row["val_accuracy"] = val[j]
            if test is not None:
                row["test_loss"], row["test_accuracy"] = test[j]
        self.runlogs[j].row(row, tb_step=step if cfg.eval_every_steps else p + 1)
        if self.verbose:
            self._print(j, p, step, row, diverged, elapsed)
        return row

    def _print(self, j: int, p: int, step: int, row: dict, diverged: bool, elapsed: float) -> None:
        cfg, periods, name = self.cfgs[0], self.schedule.periods, self.runlogs[j].folder.name
        where = f"step {step}/{self.schedule.total_steps}" if cfg.eval_every_steps else f"epoch {p + 1}/{periods}"
        eta = self.clock.left(step, self.schedule.total_steps, p + 1, periods - p - 1)  # learnt from training time
        self.log(f"{name} {where}  loss {_fmt(row['loss'])} acc {_fmt(row['accuracy'])}  "
                 f"val_acc {_fmt(row.get('val_accuracy'))}"
                 + (f"  test_acc {_fmt(row['test_accuracy'])}" if row.get("test_accuracy") is not None else "")
                 + f"  ({elapsed:.1f} s, ~{eta:.0f} s left)")
        if diverged:
            self.log(f"{name}: loss is not finite at step {step}: run marked diverged")


def _save_models(cfgs, singles, packed, runlogs, outcomes, ds) -> None:
    """Each finished run's trained network as MODEL_FILE in its folder, before result.json seals it: a
    single model built like the original (a packed trial's own weights taken out of the packed model).
    It is saved uncompiled: an optimizer in the file would cost its slots' disk (Adam: twice the weights)
    or warn on every load (Keras builds a loaded optimizer and finds no saved state); config.json says
    how it trained. A diverged run has no finite weights to keep."""
    for j, (cfg, runlog, outcome) in enumerate(zip(cfgs, runlogs, outcomes)):
        if outcome is None or outcome["status"] != "finished":
            continue
        if packed is None:  # built afresh, not cloned: cloning a compiled model rebuilds its optimizer from
            single = initial_model(cfg, ds)  # its config, which a user's unregistered class cannot do
            single.set_weights(singles[j].get_weights())
        else:
            single = packed.trial_model(j, initial_model(cfg, ds))
        tmp = runlog.folder / f".tmp-{MODEL_FILE}"  # Keras wants the .keras ending; os.replace makes it atomic
        single.save(tmp)
        os.replace(tmp, runlog.folder / MODEL_FILE)
        outcome["model"] = MODEL_FILE  # result.json names it: a finished run without it is damaged


class PreactivationProbe:
    """The pre-activations (the input to each hidden layer's nonlinearity: after the norm where there
    is one) on a fixed batch of validation images, per trial, in inference mode (BN with the statistics
    it evaluates with: its moving averages, or the population ones), as Ioffe & Szegedy's Fig. 1b-c. `measure()` -> per trial, {layer: values} with the
    batch first and the layer's units (conv: channels) last. `calls`: Keras's predict, its calls timed
    into it; None: one compiled JAX program (its compilation in `compile_seconds`)."""

    def __init__(self, evaluator: keras.Model, single: keras.Model, images: np.ndarray, k: int, packed: bool,
                 calls: FirstCalls | None = None):
        self.names = hidden_activations(single)
        self.images, self.k, self.packed, self.calls = images, k, packed, calls
        outs = [evaluator.get_layer(n).input for n in self.names]  # node 0: the shared-images graph
        self.model = keras.Model(evaluator.inputs[0], outs, name="preactivations")
        self._outputs = JaxOutputs(self.model) if calls is None and jax_loop_enabled() else None

    @property
    def compile_seconds(self) -> float:
        return self._outputs.compile_seconds if self._outputs is not None else 0.0

    def measure(self) -> list[dict[str, np.ndarray]]:
        if self._outputs is not None:
            outs = self._outputs(self.images)
        else:
            timer = [CallTimer(self.calls, "predict", [len(self.images)], 1)] if self.calls else []
            outs = self.model.predict(self.images, batch_size=len(self.images), verbose=0, callbacks=timer)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        per = [{} for _ in range(self.k)]
        for name, a in zip(self.names, outs):
            a = np.asarray(a)
            if not self.packed:
                parts = [a]
            elif a.ndim == 3:  # dense: (batch, K, units)
                parts = [a[:, j] for j in range(self.k)]
            else:  # conv: (batch, H, W, K * maps), trial j's maps in block j
                parts = np.split(a, self.k, axis=-1)
            for j, part in enumerate(parts):
                per[j][name] = part
        return per


def hidden_activations(model: keras.Model) -> list[str]:
    """The names of a single model's hidden nonlinearities (every Activation layer: the builders put
    one after each hidden linear map and norm; the output's softmax sits inside its Dense)."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Activation)]


def _outcome(status: str, last: dict, step: int, num_classes: int, how: stability.Outcome) -> dict:
    metrics = {
        "loss": last.get("loss"),
        "accuracy": last.get("accuracy"),
        "val_loss": last.get("val_loss"),
        "val_accuracy": last.get("val_accuracy"),
        "test_loss": last.get("test_loss"),
        "test_accuracy": last.get("test_accuracy"),
        "epochs_completed": last.get("epoch"),
        "steps": step,
        "wall_time": last.get("wall_time"),
        "train_time": last.get("train_time"),
        "compile_time": last.get("compile_time"),
        "seconds_per_epoch": (last["train_time"] / last["epoch"]) if last.get("epoch") else None,  # training
    }
    # A diverged run scores as chance, so a search ranks it below every run that trained.
    if status == "diverged":
        metrics["val_accuracy"] = metrics["test_accuracy"] = 1.0 / num_classes
    return {"status": status, "metrics": metrics, "outcome": how.as_dict(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
