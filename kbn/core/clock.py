"""Where a run's seconds go: training, evaluation and compilation, counted apart, so that the seconds
a report prints and an ETA learns from are training time, not the compiler's (`RunClock`). On JAX's
compiled loops each program's compilation is timed as it happens (kbn.training.jax_loop.Programs); where
Keras's fit, evaluate and predict compile inside their first calls, JAX's own compile events give it
(KBN_JAX_LOOP=off: `process_compile_seconds`), and on TensorFlow it is estimated from the calls' own
times (`FirstCalls`, fed by kbn.training.callbacks.CallTimer). A sweep's
ETA also leaves out what JAX compiles outside the loops (building a model, Keras's eager operations:
`process_compile_seconds`).
Every ETA kbn prints is learnt here: a run's (`RunClock.left`, per step and per evaluation) and a
sweep's (`Pace.left`, per unit of training of its ended trials, for one process or a chief and its
workers alike).
It must not know models, files or sweeps: seconds in, seconds out.
"""

from __future__ import annotations

import dataclasses
import statistics

# How compile_time was measured, as config.json records it (schedule.compile_time_method).
COMPILE_METHODS = {
    "explicit": "each compiled program timed as it compiles: jax.jit(...).lower(...).compile(), the first time "
                "its argument shapes are seen in the process (tracing, lowering and XLA, or loading it from "
                "the disk cache); a program another run of the process compiled costs this run nothing",
    "jax events": "JAX's own compile events (tracing, lowering, XLA) summed while the run trained and evaluated "
                  "(Keras's fit and evaluate compile inside their calls)",
    "first calls": "estimated: Keras compiles inside a call, so each call that is the first with a batch shape "
                   "(per model and kind: training, evaluation, probe) counts its seconds beyond its steps at the "
                   "median seconds per step of the same kind's other calls; a cold call is counted once its kind "
                   "has a warm one, and the rows written before then are rewritten with it",
}


@dataclasses.dataclass
class RunClock:
    """A run's cumulative seconds: `train` (training periods, compilation excluded), `evaluate`
    (evaluations and the probe, compilation excluded) and `compile` (all compilation)."""

    train: float = 0.0
    evaluate: float = 0.0
    compile: float = 0.0

    def add(self, part: str, seconds: float, compiling: float) -> None:
        """`seconds` spent training ("train") or evaluating ("evaluate"), `compiling` of them compiling
        (or, estimated late, in earlier calls of that part: it comes out of the part's total)."""
        setattr(self, part, max(0.0, getattr(self, part) + seconds - compiling))
        self.compile += compiling

    def left(self, step: int, total_steps: int, evaluations: int, evaluations_left: int) -> float:
        """Seconds left: the training seconds per step so far times the steps left, plus the seconds per
        evaluation times the evaluations left. Compilation is left out: it is (nearly) all done in the
        first period, so an ETA that learnt from it would be many times too long early on."""
        per_step = self.train / step if step else 0.0
        per_eval = self.evaluate / evaluations if evaluations else 0.0
        return per_step * (total_steps - step) + per_eval * evaluations_left


class Pace:
    """What a sweep's ETA learns from: the seconds its ended trials took (`busy`, summed over workers),
    of which they spent compiling (`compiled`: what each trial's process compiled meanwhile), and
    their training length (`work`). Compilation is left out: a worker compiles a cell's programs once,
    in its first trial, so an ETA that learnt from it was 3-32x too long early in a sweep (issue 20).
    It is not predicted either: after the first trials there is little of it (each new cell's
    programs, once per worker). Nor is the workers' start: the rate is the trials' own seconds, not the
    sweep's elapsed time, shared by the workers that train at once."""

    def __init__(self):
        self.busy = self.compiled = 0.0
        self.work = 0

    def ended(self, took: float, compiled: float) -> None:
        self.busy += took
        self.compiled += compiled

    def left(self, work: float, workers: int = 1) -> float:
        """Seconds for `work` more units of training on `workers` at once, at the ended trials' pace."""
        return max(self.busy - self.compiled, 0.0) / self.work * work / max(workers, 1) if self.work else 0.0


class FirstCalls:
    """Compilation inside Keras's own calls, estimated. `call(kind, seconds, steps, shapes)` for each
    compiled call (`shapes`: the batch sizes it ran), in the run's period `period`; a call with a shape
    its kind has not run before is cold. `seconds(kind, upto)`: the cold calls' (of periods <= upto)
    seconds beyond their steps at the median seconds per step of that kind's warm calls (fixed the first
    time the kind has one; a cold call counts nothing until then, so a row written before then is
    revised once it is known: kbn.train)."""

    def __init__(self):
        self.period = 0
        self._seen: set = set()
        self._cold: list[tuple[str, float, int, int]] = []
        self._rates: dict[str, list[float]] = {}
        self._resolved: dict[int, float] = {}  # cold call -> its compile seconds, once estimated

    def call(self, kind: str, seconds: float, steps: int, shapes) -> None:
        new = {(kind, s) for s in shapes} - self._seen
        if new:
            self._seen |= new
            self._cold.append((kind, seconds, steps, self.period))
        else:
            self._rates.setdefault(kind, []).append(seconds / max(steps, 1))

    def seconds(self, kind: str, upto: int | None = None) -> float:
        for i, (k, seconds, steps, _) in enumerate(self._cold):
            if k == kind and i not in self._resolved and self._rates.get(kind):
                self._resolved[i] = max(0.0, seconds - steps * statistics.median(self._rates[kind]))
        return sum(v for i, v in self._resolved.items()
                   if self._cold[i][0] == kind and (upto is None or self._cold[i][3] <= upto))


# JAX's own events for the three stages of compiling a program; they follow one another, never nest.
JAX_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                      "/jax/core/compile/backend_compile_duration")
_compiling = {"seconds": 0.0, "listening": False}


def _on_jax_event(event: str, seconds: float, **_) -> None:
    if event in JAX_COMPILE_EVENTS:
        _compiling["seconds"] += seconds


def process_compile_seconds() -> float | None:
    """JAX: the seconds this process has spent compiling since it first asked, every program counted
    (the loops', and the small ones of building a model and of Keras's eager operations, which in a
    worker's first trial took twice the loops' time); None on another backend."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    if not _compiling["listening"]:
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(_on_jax_event)
        _compiling["listening"] = True
    return _compiling["seconds"]
