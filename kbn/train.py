"""One training run, fully logged: the unit every sweep and report is built from.

The run proceeds in *periods*: one epoch each, or `eval_every_steps` optimizer steps (the poster's
"test accuracy every 5,000 steps"). The training order comes from a seeded permutation stream, so the
same seed gives the same numbers. After each period: validation (and test where asked) is evaluated,
a row goes to metrics.csv and TensorBoard, and progress is printed. A NaN/inf loss ends the run as
*diverged* (a result, not a crash).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np

from kbn import __version__, data as kdata, models, optim
from kbn.callbacks import Heartbeat, StopOnNonFinite
from kbn.runlog import RunLog, is_finite
from kbn.config import TrainConfig

EVAL_BATCH = 1000


@dataclasses.dataclass
class RunResult:
    folder: Path
    status: str  # finished | diverged
    metrics: dict
    skipped: bool = False  # True when an identical finished run was found and not redone


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


def _evaluate(model, x, y) -> tuple[float, float]:
    r = model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    return float(r["loss"]), float(r["accuracy"])


def _fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)


def train(cfg: TrainConfig, logdir: str | Path, overwrite: bool = False, verbose: bool = True,
          dataset: kdata.Dataset | None = None, log=print, hparams: dict | None = None) -> RunResult:
    """Train `cfg` into `logdir/<run name>/`; a finished identical run is returned, not redone."""
    folder = Path(logdir) / cfg.run_name()
    runlog = RunLog(folder)
    done = runlog.finished()
    if done is not None and not overwrite:
        if verbose:
            log(f"kbn: {folder} already finished ({done['status']}); not redone (use --overwrite to redo)")
        return RunResult(folder, done["status"], done["metrics"], skipped=True)

    ds = dataset if dataset is not None else kdata.load(cfg.dataset, cfg.data_dir, cfg.subset, verbose=verbose)
    keras.utils.set_random_seed(cfg.seed)
    model = models.build(cfg.arch, ds.input_shape, ds.num_classes, cfg.norm, cfg.activation, cfg.depth, cfg.width)
    model.compile(
        optimizer=optim.make_optimizer(cfg.optimizer, cfg.lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    n = len(ds.y_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    if cfg.eval_every_steps:
        total_steps = cfg.total_steps or cfg.epochs * steps_per_epoch
        periods = math.ceil(total_steps / cfg.eval_every_steps)
    else:
        total_steps, periods = cfg.epochs * steps_per_epoch, cfg.epochs
    config = {
        "settings": cfg.to_dict(),
        "run": folder.name,
        "backend": keras.backend.backend(),
        "versions": versions(),
        "data": {"source": ds.source, "sizes": ds.sizes(), "input_shape": list(ds.input_shape)},
        "model": {"name": model.name, "params": model.count_params()},
        "schedule": {"steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "periods": periods},
        "command": sys.argv,
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if hparams is None:
        hparams = {k: cfg.to_dict()[k] for k in ("dataset", "arch", "norm", "optimizer", "lr", "seed", "batch_size")}
    runlog.start(config, hparams)
    result = None
    try:
        result = _loop(cfg, model, ds, runlog, steps_per_epoch, total_steps, periods, verbose, log)
    finally:
        runlog.close(result)  # result None (an exception, Ctrl-C): the folder stays unfinished
    return RunResult(folder, result["status"], result["metrics"])


def _loop(cfg, model, ds, runlog, steps_per_epoch, total_steps, periods, verbose, log) -> dict:
    n = len(ds.y_train)
    order = IndexStream(n, cfg.seed)
    stopper = StopOnNonFinite()
    step, t0, status, last = 0, time.perf_counter(), "finished", {}
    test_each = cfg.test_every_epoch or cfg.eval_every_steps is not None
    label = runlog.folder.name
    for p in range(periods):
        if cfg.eval_every_steps:
            k = min(cfg.eval_every_steps, total_steps - step)
            idx = order.take(k * cfg.batch_size)
        else:
            k, idx = steps_per_epoch, order.take(n)
        callbacks = [stopper]
        if verbose:
            callbacks.append(Heartbeat(label, k))
        hist = model.fit(
            ds.x_train[idx], ds.y_train[idx], batch_size=cfg.batch_size, epochs=p + 1, initial_epoch=p,
            shuffle=False, verbose=0, callbacks=callbacks,
        )
        step += k
        loss = float(hist.history["loss"][-1]) if hist.history.get("loss") else float("nan")
        acc = float(hist.history["accuracy"][-1]) if hist.history.get("accuracy") else None
        diverged = stopper.diverged or not is_finite(loss)
        row = {
            "epoch": round(step * cfg.batch_size / n, 4) if cfg.eval_every_steps else p + 1,
            "step": step, "loss": loss, "accuracy": acc,
            "lr": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
        }
        if diverged:
            row["loss"] = float("nan")
        else:
            row["val_loss"], row["val_accuracy"] = _evaluate(model, ds.x_val, ds.y_val)
        is_last = diverged or p == periods - 1
        if (test_each or is_last) and not diverged:
            row["test_loss"], row["test_accuracy"] = _evaluate(model, ds.x_test, ds.y_test)
        row["wall_time"] = round(time.perf_counter() - t0, 3)
        runlog.row(row, tb_step=step if cfg.eval_every_steps else p + 1)
        last = row
        if verbose:
            where = f"step {step}/{total_steps}" if cfg.eval_every_steps else f"epoch {p + 1}/{periods}"
            eta = row["wall_time"] / (p + 1) * (periods - p - 1)
            log(f"{label} {where}  loss {_fmt(row['loss'])} acc {_fmt(acc)}  "
                f"val_acc {_fmt(row.get('val_accuracy'))}"
                + (f"  test_acc {_fmt(row['test_accuracy'])}" if row.get("test_accuracy") is not None else "")
                + f"  ({row['wall_time']:.1f} s, ~{eta:.0f} s left)")
        if diverged:
            status = "diverged"
            if verbose:
                log(f"{label}: loss is not finite at step {step}: run marked diverged")
            break
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
        "seconds_per_epoch": (last["wall_time"] / last["epoch"]) if last.get("epoch") else None,
    }
    # A diverged run scores as chance, so a search ranks it below every run that trained.
    if status == "diverged":
        metrics["val_accuracy"] = metrics["test_accuracy"] = 1.0 / ds.num_classes
    return {"status": status, "metrics": metrics, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
