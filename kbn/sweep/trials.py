"""The one reader of Keras Tuner's trial files (`tuner/trial_NNNN/trial.json`).

Status, the oracle's resume, `open_sweep`, the tuning-robustness measures and the benchmark all read a
sweep's trials through `scan`: each file is either a `TrialRecord` (its values checked as kbn wrote
them) or an `Unreadable` saying why, so every reader treats a damaged or edited file the same way.
No Keras, no Keras Tuner: it reads JSON.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator, NamedTuple


class Unreadable(NamedTuple):
    trial_id: str  # the folder's name after "trial_"
    path: Path
    why: str  # "not a number: score 'x'", "JSONDecodeError", ...


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial as its file tells it. status is Keras Tuner's (COMPLETED, FAILED, RUNNING, ...);
    score is None until it ends; metrics holds each metric's last reported value."""

    trial_id: str
    path: Path
    values: dict
    status: str
    score: float | None
    message: str | None
    metrics: dict[str, float]

    @property
    def cell(self) -> str:
        return self.values["cell"]

    @property
    def phase(self) -> str:
        return self.values["phase"]

    @property
    def lr(self) -> float:
        return float(self.values["lr"])

    @property
    def seed(self) -> int:
        return int(self.values.get("seed", 0))


def trial_values(state) -> dict:
    """A trial.json's hyperparameter values, checked as kbn wrote them: ValueError naming the field
    when the file was damaged or edited (a score that is not a number, an lr or seed of the wrong kind);
    the readers then treat the file as unreadable, as one that is not JSON."""
    values = state["hyperparameters"]["values"]
    score = state.get("score")
    if score is not None and (not isinstance(score, (int, float)) or isinstance(score, bool)):
        raise ValueError(f"score {score!r} is not a number")
    for key, kind in (("lr", (int, float)), ("seed", int)):
        v = values.get(key)
        if key in values and (not isinstance(v, kind) or isinstance(v, bool)):
            raise ValueError(f"{key} {v!r} is not a number")
    for key in ("cell", "phase"):
        if not isinstance(values.get(key), str):
            raise ValueError(f"{key} {values.get(key)!r} is missing or not text")
    return values


def _last_values(state: dict) -> dict[str, float]:
    """Keras Tuner's MetricsTracker state ({"metrics": {name: {"observations": [{"value": [x]}]}}}),
    as each metric's last value; a metric whose entry is not in that shape is left out."""
    out = {}
    tracked = (state.get("metrics") or {}).get("metrics") or {}
    for name, entry in tracked.items() if isinstance(tracked, dict) else ():
        try:
            out[name] = float(entry["observations"][-1]["value"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return out


def read_trial(path: Path) -> TrialRecord:
    """The trial file at `path`; OSError, ValueError, KeyError or TypeError when it cannot be read
    as kbn wrote it."""
    path = Path(path)
    state = json.loads(path.read_text())
    values = trial_values(state)
    status = state["status"]
    if not isinstance(status, str):
        raise ValueError(f"status {status!r} is not text")
    message = state.get("message")
    return TrialRecord(path.parent.name.split("_", 1)[-1], path, values, status, state.get("score"),
                       message if isinstance(message, str) else None, _last_values(state))


def trial_files(tuner_dir: Path) -> list[Path]:
    """Every trial file of a Keras Tuner project folder, in id order (ids are zero-padded)."""
    return sorted(Path(tuner_dir).glob("trial_*/trial.json"), key=str)


def scan(logdir: Path, tuner_dir: Path | None = None) -> Iterator[TrialRecord | Unreadable]:
    """Each trial file of the sweep in `logdir` (its tuner/ folder, or `tuner_dir`), in id order."""
    for path in trial_files(tuner_dir if tuner_dir is not None else Path(logdir) / "tuner"):
        try:
            yield read_trial(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            # trial_values's own words for what it checks; the exception's kind for the rest
            why = str(e) if type(e) is ValueError else type(e).__name__
            yield Unreadable(path.parent.name.split("_", 1)[-1], path, why)


def records(logdir: Path) -> list[TrialRecord]:
    """The readable trials of the sweep in `logdir`, in id order (`kbn status` names the others)."""
    return [t for t in scan(logdir) if isinstance(t, TrialRecord)]
