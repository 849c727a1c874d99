"""A sweep folder as Python objects: `kbn.open_sweep(DIR)`.
Read-only: it must not train, tune or know how a report computes its numbers.

What `kbn status` and the reports read, for notebooks and scripts: the sweep's settings, the learning
rate each cell chose, every trial, and the final runs with their saved networks. It reads the files
through kbn.sweep.plan alone (no Keras, no Keras Tuner), so it is cheap and safe on a live sweep: each call
reads the folder afresh.

    >>> import kbn
    >>> s = kbn.open_sweep("logs/smoke")
    >>> s.chosen()                      # {cell key: chosen learning rate, None while searching}
    {'fashion_mnist-mlp-none-sgd': 0.316, ...}
    >>> s.final_runs[["cell", "seed", "test_accuracy", "model"]]
    >>> import keras; net = keras.saving.load_model(s.final_runs.model[0])
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kbn.core.config import SweepConfig, cells_by_key
from kbn.runs.runlog import MODEL_FILE, check_run
from kbn.sweep.folder import check_trial_run, load_folder_sweep, run_folder
from kbn.sweep.status import STATUS_FIELDS, folder_progress, problem_lines, status_records
from kbn.sweep.trials import records

TRIAL_COLUMNS = ["trial_id", "cell", "dataset", "arch", "norm", "optimizer", "phase", "lr", "seed", "status", "score",
                 "outcome"]
FINAL_COLUMNS = ["cell", "dataset", "arch", "norm", "optimizer", "seed", "lr", "folder", "status", "test_accuracy",
                 "val_accuracy", "outcome", "best_val_accuracy", "fell_at", "model"]
STATUS_COLUMNS = STATUS_FIELDS


class Sweep:
    """One sweep folder (`logs/<name>/`). `config` is its validated sweep (from sweep.json).

    >>> s = kbn.open_sweep("logs/smoke")
    >>> s.trials.groupby(["cell", "phase"]).score.max()     # the search, per cell and phase
    >>> s.final_runs.groupby("cell").test_accuracy.mean()   # the results, per cell
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.config: SweepConfig = load_folder_sweep(self.folder)

    def __repr__(self) -> str:
        return f"kbn.open_sweep({str(self.folder)!r})  # sweep {self.config.name}, {len(self.config.cells())} cells"

    def chosen(self) -> dict[str, float | list[float] | None]:
        """{cell key: the learning rate its search chose}; None for a cell still searching (or held
        by a failed trial). The final runs train at these rates. A fixed-rate sweep gives its rate, or
        its list of shared rates (`lr = [0.1, 0.3]`: every cell trains at each; `status()` and
        `final_runs` have a row per rate, final_runs' lr column says which).

        >>> kbn.open_sweep("logs/smoke").chosen()["fashion_mnist-mlp-batch-adam"]
        0.01
        """
        return {key: p["chosen"] for key, p in folder_progress(self.folder).progress.items()}

    @property
    def trials(self) -> pd.DataFrame:
        """Every trial of the Keras Tuner project, one row each, in trial-id order: TRIAL_COLUMNS.
        status is Keras Tuner's (COMPLETED, FAILED, RUNNING, ...); score is what selection ranks (the
        validation or test accuracy, per `select_on`; chance for a diverged trial), None until it ends;
        outcome is how a completed trial's training ended (trained, diverged, collapsed, never learned:
        kbn.core.stability), read from its run folder, None until then.
        Unreadable trial files are left out (`problems()` names them).

        >>> t = kbn.open_sweep("logs/smoke").trials
        >>> t[(t.cell == "fashion_mnist-mlp-batch-adam") & (t.phase == "coarse")][["lr", "score"]]
        """
        cells = cells_by_key(self.config)
        rows = []
        for t in records(self.folder):
            v = t.values
            cell = cells.get(t.cell)
            if cell is None:
                continue
            outcome = None
            if t.status == "COMPLETED":
                _, check = check_trial_run(self.config, self.folder, v, cells)
                outcome = check.outcome.kind if check.outcome is not None else None
            rows.append([t.trial_id, cell.key, cell.dataset, cell.arch, cell.norm, cell.optimizer, v["phase"],
                         t.lr, t.seed, t.status, t.score, outcome])
        return pd.DataFrame(rows, columns=TRIAL_COLUMNS)

    @property
    def final_runs(self) -> pd.DataFrame:
        """The final runs (phase "final": the chosen rate, once per seed), one row each: FINAL_COLUMNS.
        folder is the run folder under runs/; status is the run's (finished, diverged), or "damaged" (a
        file it had is gone or not whole: its folder, result.json, metrics.csv, model.keras; `problems()`
        says which, and a run whose model.keras alone is lost keeps its accuracies), or the trial's while
        it has not ended (running, failed); outcome is how its training ended
        (trained, diverged, collapsed, never learned: kbn.core.stability), with its best validation accuracy
        and, for a collapsed or diverged run, the epoch (step) where it fell (fell_at); model is the path
        of its trained network (`model.keras`, saved uncompiled; None for a diverged run or one made
        before kbn kept models).

        >>> import keras
        >>> row = kbn.open_sweep("logs/smoke").final_runs.iloc[0]
        >>> net = keras.saving.load_model(row.model)
        >>> net.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        >>> ds = kbn.data.load(row.dataset)          # the same splits and scaling
        >>> net.evaluate(ds.x_test, ds.y_test, return_dict=True)["accuracy"]  # == row.test_accuracy
        """
        cells = cells_by_key(self.config)
        rows = []
        for t in records(self.folder):
            v = t.values
            if t.cell not in cells or t.phase != "final":
                continue
            if t.status == "COMPLETED":
                folder, check = check_trial_run(self.config, self.folder, v, cells)
            else:
                folder = run_folder(self.config, self.folder, v, cells)
                check = check_run(folder)
            metrics = (check.result or {}).get("metrics", {})
            if check.damaged:
                status = "damaged"
            elif check.result is not None:
                status = check.result["status"]
            else:
                status = t.status.lower()
            model = folder / MODEL_FILE
            how = check.outcome
            c = cells[v["cell"]]
            rows.append([c.key, c.dataset, c.arch, c.norm, c.optimizer, int(v["seed"]), float(v["lr"]), str(folder), status,
                         metrics.get("test_accuracy"), metrics.get("val_accuracy"),
                         how.kind if how else None, how.best if how else None, how.fell_at if how else None,
                         str(model) if check.result is not None and not check.damaged and model.exists() else None])
        return pd.DataFrame(rows, columns=FINAL_COLUMNS)

    def status(self) -> pd.DataFrame:
        """What `kbn status` prints, in numbers, one row per cell (per cell and rate for a list of
        shared rates, chosen_lr the rate): STATUS_COLUMNS. state is done, running, stopped, failed or
        pending; *_done / *_planned count each phase's trials (fine_* missing until the coarse grid
        has a best); chosen_lr a float (missing while searching); final_mean_score the final runs'
        mean score as a fraction; final_unstable how many of them did not train.

        >>> st = kbn.open_sweep("logs/smoke").status()
        >>> st.pivot(index="optimizer", columns="norm", values="final_mean_score")
        """
        return pd.DataFrame(status_records(self.folder), columns=STATUS_COLUMNS)

    def problems(self) -> list[str]:
        """Failed trials, unreadable trial files and damaged or lost run folders, one line each (what
        `kbn status` lists; a resumed sweep redoes them)."""
        return problem_lines(folder_progress(self.folder))


def open_sweep(folder: str | Path) -> Sweep:
    """The sweep in `folder` (a `kbn sweep --logdir`, default `logs/<name>`); ConfigError if it holds
    no sweep.json.

    >>> import kbn
    >>> s = kbn.open_sweep("logs/smoke")
    >>> s.chosen(), s.trials, s.final_runs, s.status()
    """
    return Sweep(folder)
