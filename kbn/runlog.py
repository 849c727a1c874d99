"""What a run leaves behind: its folder, metrics.csv, TensorBoard scalars and HParams, result.json.

A run folder holds:
  config.json   every setting, package versions, backend, data source (written first)
  metrics.csv   one row per epoch (or per eval period): METRIC_COLUMNS
  train/ validation/ test/   TensorBoard event files (tags epoch_loss, epoch_accuracy, learning_rate)
  result.json   written last and atomically: a folder without it is an unfinished run
TensorBoard files are written with the `tensorboard` package alone, so the JAX backend needs no TF.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from pathlib import Path

METRIC_COLUMNS = (
    "epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy",
    "test_loss", "test_accuracy", "lr", "wall_time",
)
SPLIT_DIRS = {"train": "train", "val": "validation", "test": "test"}


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def is_finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


class ScalarWriter:
    """TensorBoard scalars without TensorFlow (tensorboard's own event-file writer)."""

    def __init__(self, logdir: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        vals = [Summary.Value(tag=t, simple_value=float(v)) for t, v in values.items() if v is not None]
        if vals:
            self._writer.add_event(Event(wall_time=time.time(), step=int(step), summary=Summary(value=vals)))

    def raw_event(self, event) -> None:
        self._writer.add_event(event)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class RunLog:
    """The folder of one run: created fresh, filled row by row, sealed by result.json."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def result_path(self) -> Path:
        return self.folder / "result.json"

    def finished(self) -> dict | None:
        """The stored result of a finished run, else None."""
        try:
            return json.loads(self.result_path.read_text())
        except (OSError, ValueError):
            return None

    def start(self, config: dict, hparams: dict | None = None) -> None:
        # An unfinished folder is a run that was interrupted: it is redone from scratch.
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        write_json_atomic(self.folder / "config.json", config)
        self._csv_file = open(self.folder / "metrics.csv", "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=METRIC_COLUMNS)
        self._csv.writeheader()
        self._csv_file.flush()
        self._tb = {split: ScalarWriter(self.folder / d) for split, d in SPLIT_DIRS.items()}
        if hparams:
            self._write_hparams(hparams)

    def _write_hparams(self, hparams: dict) -> None:
        """An HParams session at the run folder's root, so TensorBoard's HParams dashboard lists the
        run with its settings and the epoch_* scalars of its train/validation/test sub-runs."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.plugins.hparams import summary_v2

        w = ScalarWriter(self.folder)
        w.raw_event(Event(wall_time=time.time(), step=0, summary=summary_v2.hparams_pb(hparams, trial_id=self.folder.name)))
        w.close()

    def row(self, row: dict, tb_step: int) -> None:
        self._csv.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
        self._csv_file.flush()
        self._tb["train"].scalars(
            {"epoch_loss": row.get("loss"), "epoch_accuracy": row.get("accuracy"), "learning_rate": row.get("lr")},
            tb_step,
        )
        for split, prefix in (("val", "val_"), ("test", "test_")):
            self._tb[split].scalars(
                {"epoch_loss": row.get(prefix + "loss"), "epoch_accuracy": row.get(prefix + "accuracy")}, tb_step
            )
        for w in self._tb.values():
            w.flush()

    def close(self, result: dict | None) -> None:
        """Close the files; `result` (None when the run was aborted) seals the folder as finished."""
        for w in getattr(self, "_tb", {}).values():
            w.close()
        if getattr(self, "_csv_file", None):
            self._csv_file.close()
        if result is not None:
            write_json_atomic(self.result_path, result)


def read_metrics(folder: Path) -> list[dict]:
    """metrics.csv as a list of dicts with floats (None where a value was not measured)."""
    with open(Path(folder) / "metrics.csv", newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]
