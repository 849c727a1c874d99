"""What a run leaves behind: its folder, metrics.csv, TensorBoard scalars and HParams, result.json.
It must not know Keras models, optimizers or how a run trains: rows and results in, files out.

A run folder holds:
  config.json   every setting, package versions, backend, data source (written first)
  metrics.csv   one row per epoch (or per eval period): METRIC_COLUMNS, the seconds cumulative
  events.out.tfevents.*   one TensorBoard run: scalars <split>/<axis>_<metric> and the HParams session
  preactivations.csv   (probe_preactivations > 0) per evaluation and hidden layer, the 15th/50th/85th
                percentiles of the input to its nonlinearity on a fixed batch of validation images, for one
                fixed unit (FIXED_UNIT) and over all units; TensorBoard gets them as scalars and histograms
  model.keras   the trained network, uncompiled (kbn train; a sweep's final runs), written before result.json
                (which then names it: "model")
  result.json   written last and atomically: a folder without it is an unfinished run, unless its
                run is known to have finished (a completed trial's): then it was lost
TensorBoard files are written without TensorFlow (kbn.runs.tboard), so the JAX backend never imports it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from kbn.core import stability
from kbn.runs import tboard

MODEL_FILE = "model.keras"  # a run's trained network (kbn.train writes it, kbn.sweep.view lists it)
METRIC_COLUMNS = (
    "epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy",
    "test_loss", "test_accuracy", "lr", "wall_time", "train_time", "compile_time",
)
# wall_time: seconds since the run's first period began; train_time: of them, the seconds spent training
# (compilation, evaluations and logging excluded); compile_time: the seconds spent compiling (how: config.json's
# timing). Cumulative, per row. Folders from before train_time and compile_time lack them (read as None).


PREACT_FILE = "preactivations.csv"
PERCENTILES = (15, 50, 85)  # Ioffe & Szegedy (2015), Fig. 1b-c
FIXED_UNIT = 0  # the unit (conv: channel) followed alone, as the paper followed "a typical sigmoid"
HISTOGRAM_BUCKETS = 30


def preactivation_rows(layers: dict) -> list[dict]:
    """Per layer ({name: values, batch first, units last}) and scope, the PERCENTILES."""
    rows = []
    for name, a in layers.items():
        a = np.asarray(a, np.float64)
        for scope, v in (("unit", a[..., FIXED_UNIT]), ("all", a)):  # the fixed unit; every unit
            p = np.percentile(v.ravel(), PERCENTILES)
            rows.append({"layer": name, "scope": scope, **{f"p{q}": float(x) for q, x in zip(PERCENTILES, p)}})
    return rows


def _strict(obj):
    """NaN and inf as null: strict JSON, readable by any JSON parser (a diverged loss is NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_strict(obj), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")
    os.replace(tmp, path)


def is_finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


class RunLog:
    """The folder of one run: created fresh, filled row by row, sealed by result.json."""

    def __init__(self, folder: Path, axis: str = "epoch"):
        self.folder = Path(folder)
        self.axis = axis  # what TensorBoard's step counts: "epoch", or "step" (evaluated every K steps)

    @property
    def result_path(self) -> Path:
        return self.folder / "result.json"

    def finished(self) -> dict | None:
        """The stored result of a finished run whose files are whole, else None (unfinished or damaged)."""
        check = check_run(self.folder)
        return None if check.damaged else check.result

    def start(self, config: dict, hparams: tboard.HParams | None = None) -> None:
        # An unfinished folder is a run that was interrupted: it is redone from scratch.
        if self.folder.is_dir():
            shutil.rmtree(self.folder)
        elif self.folder.exists() or self.folder.is_symlink():  # a file where the folder was: damage, replaced
            self.folder.unlink()
        self.folder.mkdir(parents=True)
        write_json_atomic(self.folder / "config.json", config)
        self._csv_file = open(self.folder / "metrics.csv", "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=METRIC_COLUMNS)
        self._csv.writeheader()
        self._csv_file.flush()
        self._tb = tboard.EventWriter(self.folder, self.axis)
        if hparams:
            hparams.write(self._tb)
        self._tb.flush()

    def row(self, row: dict, tb_step: int) -> None:
        self._csv.writerow(_csv_row(row))
        self._csv_file.flush()
        self._tb.scalars({(split, metric): row.get(col) for split, metric, col in tboard.SCALARS}, tb_step)
        self._tb.flush()

    def rewrite(self, rows: list[dict]) -> None:
        """metrics.csv as `rows` (every row so far, some revised: an estimate of compilation known
        late), replaced atomically; later rows append to it."""
        self._csv_file.close()
        tmp = self.folder / ".metrics.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            w.writerows(_csv_row(r) for r in rows)
        os.replace(tmp, self.folder / "metrics.csv")
        self._csv_file = open(self.folder / "metrics.csv", "a", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=METRIC_COLUMNS)

    def preactivations(self, layers: dict, tb_step: int) -> list[dict]:
        """One evaluation's pre-activations ({layer: values}): percentiles to PREACT_FILE and TensorBoard
        scalars (preactivation/<axis>_<layer>_<scope>_p<q>), each layer's values as a histogram."""
        rows = preactivation_rows(layers)
        if getattr(self, "_preact", None) is None:
            self._preact_file = open(self.folder / PREACT_FILE, "w", newline="")
            self._preact = csv.DictWriter(self._preact_file, fieldnames=[self.axis, "layer", "scope"]
                                          + [f"p{q}" for q in PERCENTILES])
            self._preact.writeheader()
        for r in rows:
            self._preact.writerow({self.axis: tb_step, **r})
        self._preact_file.flush()
        self._tb.preactivations(rows, layers, tb_step, HISTOGRAM_BUCKETS)
        self._tb.flush()
        return rows

    def close(self, result: dict | None, tb_step: int | None = None) -> None:
        """Close the files; `result` (None when the run was aborted) seals the folder as finished.
        Its outcome (trained, diverged, collapsed, never learned) also goes to TensorBoard at
        `tb_step`: scalars outcome/<kind> and the HParams session's end status."""
        if getattr(self, "_preact_file", None):
            self._preact_file.close()
        if getattr(self, "_tb", None):
            if result is not None and result.get("outcome"):
                self._tb.outcome(result["outcome"]["kind"], tb_step or 0)
            self._tb.close()
        if getattr(self, "_csv_file", None):
            self._csv_file.close()
        if result is not None:
            write_json_atomic(self.result_path, result)


def _csv_row(row: dict) -> dict:
    return {k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS}


@dataclasses.dataclass
class RunCheck:
    """What a run folder holds: `result` for a finished run whose numbers are whole; `problem` says
    why a folder that claims to be finished (it has result.json, or its run is known to have
    finished) cannot be trusted. `lost`: the problem is a file the finished run had that is gone or
    not whole (the folder, result.json, model.keras) -- a report reading the folder alone cannot
    see it. A run whose model.keras alone is lost keeps its `result` (its numbers are whole)."""

    config: dict | None = None
    result: dict | None = None
    problem: str | None = None
    outcome: stability.Outcome | None = None  # a finished run's: result.json's, or read off metrics.csv
    lost: bool = False

    @property
    def damaged(self) -> bool:
        return self.problem is not None


def check_run(folder: Path, finished: bool = False, model: bool = False) -> RunCheck:
    """Read a run folder and check that its files agree: config.json and result.json parse,
    metrics.csv holds one complete row per evaluation period the result claims. A folder without
    result.json is an unfinished run (no problem: it is simply redone), unless `finished` says the
    run is known to have finished (a completed trial): then its folder or result.json was lost.
    `model`: a finished run must keep its trained network, a whole MODEL_FILE (`check_model`; a
    run made before kbn kept models, whose result.json names none and records no outcome, need not)."""
    folder = Path(folder)
    if not (folder / "result.json").exists():
        if not finished:
            return RunCheck()
        gone = ("result.json is missing" if folder.is_dir() else
                "the run folder is a file, not a folder" if folder.exists() else "the run folder is missing")
        return RunCheck(problem=gone, lost=True)
    try:
        result = json.loads((folder / "result.json").read_text())
        if not isinstance(result, dict) or result.get("status") not in ("finished", "diverged") \
                or not isinstance(result.get("metrics"), dict):
            raise ValueError("no status and metrics")
    except (OSError, ValueError) as e:
        return RunCheck(problem=f"result.json is unreadable ({_why(e)})")
    try:
        config = json.loads((folder / "config.json").read_text())
        periods = int(config["schedule"]["periods"])
        config["settings"]["seed"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return RunCheck(result=None, problem=f"config.json is unreadable ({_why(e)})")
    try:
        rows = read_metrics(folder)
    except FileNotFoundError:
        return RunCheck(config, problem="metrics.csv is missing")
    except (OSError, ValueError, csv.Error) as e:
        return RunCheck(config, problem=f"metrics.csv is unreadable ({_why(e)})")
    done = result["status"] == "finished"
    # a finished run's every row was evaluated; a diverged run's last row has no validation
    need = ("epoch", "step", "val_accuracy") if done else ("epoch", "step")
    complete = [r for r in rows if all(r.get(k) is not None for k in need)]
    expected = periods if done else None
    if not rows or len(complete) != len(rows) or (expected is not None and len(rows) != expected) \
            or len(rows) > periods:
        want = f"{expected}" if expected is not None else f"1 to {periods}"
        return RunCheck(config, problem=f"metrics.csv holds {len(complete)} complete row(s) of {want}")
    if done and rows[-1]["val_accuracy"] != result["metrics"].get("val_accuracy"):
        return RunCheck(config, problem="metrics.csv's last row disagrees with result.json")
    outcome = run_outcome(config, result, rows)
    if done and model and (result.get("model") == MODEL_FILE or "outcome" in result or (folder / MODEL_FILE).exists()):
        why = check_model(folder)
        if why:
            return RunCheck(config, result, problem=why, outcome=outcome, lost=True)
    return RunCheck(config, result, outcome=outcome)


def check_model(folder: Path) -> str | None:
    """Why a run's MODEL_FILE cannot be loaded, or None: it must be there, non-empty, and a whole zip
    holding Keras's config.json and weights. Cheap: the zip's directory and the config are read, not
    the weights (a truncated file has lost the directory at its end)."""
    path = Path(folder) / MODEL_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{MODEL_FILE} is missing"
    except OSError as e:
        return f"{MODEL_FILE} is unreadable ({_why(e)})"
    if size == 0:
        return f"{MODEL_FILE} is empty"
    try:
        with zipfile.ZipFile(path) as z:
            if not {"config.json", "model.weights.h5"} <= set(z.namelist()):
                raise ValueError("no Keras config and weights")
            json.loads(z.read("config.json"))
    except IsADirectoryError:
        return f"{MODEL_FILE} is a folder, not a Keras file"
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, RuntimeError):
        return f"{MODEL_FILE} is not a whole Keras file"
    return None


def run_outcome(config: dict, result: dict, rows: list[dict]) -> stability.Outcome:
    """How a finished run ended: result.json's outcome, or (a run made before kbn recorded one)
    read off its metrics.csv rows by the same rule."""
    stored = result.get("outcome")
    if isinstance(stored, dict) and stored.get("kind") in stability.OUTCOMES:
        try:
            return stability.Outcome.from_dict(stored)
        except TypeError:
            pass  # a hand-edited outcome: read it off the rows instead
    classes = (config.get("data") or {}).get("num_classes") or 10
    axis = "step" if (config.get("settings") or {}).get("eval_every_steps") else "epoch"
    return stability.of_rows(rows, 1 / classes, result["status"] == "diverged", axis)


def check_writable_dir(field: str, path) -> Path:
    """A folder kbn will write into: created if absent; one line naming the option if it cannot be."""
    from kbn.core.errors import ConfigError

    if not str(path).strip():
        raise ConfigError(f"{field}: got {str(path)!r}; give a folder to write into (. for this one)")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{field}: {str(path)!r} is a file, not a folder; give a folder to write into")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".kbn-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{field}: cannot write into {str(path)!r} ({_why(e)}); give a writable folder") from None
    return p


def _why(e: Exception) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines() or [type(e).__name__])[0]


def read_preactivations(folder: Path) -> list[dict]:
    """PREACT_FILE as dicts: the axis column and percentiles as numbers, layer and scope as text
    ([] when the run logged none)."""
    path = Path(folder) / PREACT_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (v if k in ("layer", "scope") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def read_metrics(folder: Path) -> list[dict]:
    """metrics.csv as a list of dicts with floats (None where a value was not measured)."""
    with open(Path(folder) / "metrics.csv", newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]
