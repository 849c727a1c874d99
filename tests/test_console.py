"""Text outputs fit the terminal they are printed on (kbn.core.console)."""

import numpy as np
import pandas as pd
import pytest

from kbn.core import console
from kbn.cli import main


def wide_csv(path):
    """A long table: 4 networks x 3 optimizers x none/batch x 3 seeds x 5 epochs, with per-epoch
    seconds, so every table of the report (Summary, Table 1, convergence) is built and is wide."""
    rng = np.random.default_rng(0)
    rows = []
    for d in ("mnist",):
        for a in ("mlp", "cnn", "deep_mlp", "deep_cnn"):
            for o in ("sgd", "adam", "rmsprop"):
                for n in ("none", "batch"):
                    for s in range(3):
                        acc = 0.5 + 0.3 * rng.random() + (0.05 if n == "batch" else 0)
                        for e in range(1, 6):
                            for split in ("validation", "test"):
                                rows.append({"dataset": d, "arch": a, "norm": n, "optimizer": o, "lr": 0.01,
                                             "seed": s, "epoch": e, "split": split,
                                             "accuracy": min(0.99, acc * (0.6 + 0.08 * e) + 0.01 * rng.random()),
                                             "wall_time": 3.0 * e, "train_time": 2.5 * e})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("cols", [80, 100, 120])
def test_the_report_fits_the_terminal(tmp_path, capsys, monkeypatch, cols):
    csv = wide_csv(tmp_path / "wide.csv")
    monkeypatch.setenv("COLUMNS", str(cols))
    assert main(["report", "--from-csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert console.widest(out) <= cols, max(out.splitlines(), key=len)
    assert "Summary" in out and "Findings" in out and "Table 1" in out
    # nothing is cut: every number a table holds is still printed whole
    assert out.count("pts") >= 3 * 4


def test_a_note_repeated_by_tables_of_one_kind_is_printed_once(tmp_path, capsys, monkeypatch):
    csv = wide_csv(tmp_path / "wide.csv")
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["report", "--from-csv", str(csv), "--epochs", "2,5"]) == 0
    out = capsys.readouterr().out
    notes = [ln for ln in out.split("Findings of the thesis")[0].splitlines()
             if ln.startswith("  ") and not ln.startswith("   ") and "as under the tables above" not in ln]
    assert notes and len(notes) == len(set(notes))
    assert "Notes as under the tables above." in out


def test_width_reads_columns_then_the_tty_then_100(monkeypatch):
    monkeypatch.setenv("COLUMNS", "87")
    assert console.width() == 87
    monkeypatch.delenv("COLUMNS")

    class Pipe:
        def isatty(self):
            return False

    assert console.width(Pipe()) == 100


def test_a_table_too_wide_stacks_its_cells_then_splits_its_columns():
    rows = [["Adam", "✓ +1.27 [-3.05, +5.59] pts; rel 0.06 [-0.12, 0.24]; P(win) 1.00", "x" * 30],
            ["SGD", "? +8.22 [-12.18, +28.61] pts; rel 0.28 [-0.38, 0.95]; P(win) 0.50", "y" * 30]]
    headers = ["optimizer", "Fashion-MNIST + residual MLP", "CIFAR-10 + CNN"]
    wide = console.table(rows, headers, 200)
    assert "\n" not in wide.splitlines()[2] and console.widest(wide) > 80
    for cols in (60, 80):
        text = console.table(rows, headers, cols)
        assert console.widest(text) <= cols
        assert "[-12.18, +28.61]" in text and "rel 0.28 [-0.38, 0.95]" in text
    assert console.fit_line("a" * 50 + "b" * 50, 40) == "a" * 26 + "…" + "b" * 13


@pytest.mark.parametrize("cols", ["80", "200"])
def test_a_progress_line_fits_100_columns_and_keeps_its_score_and_eta(tmp_path, monkeypatch, cols):
    from types import SimpleNamespace

    from keras_tuner.engine.trial import TrialStatus

    from kbn.core.config import load_sweep
    from kbn.sweep.tuner import progress_line

    monkeypatch.setenv("COLUMNS", cols)
    f = tmp_path / "s.toml"
    f.write_text('datasets = ["binary_fashion_mnist"]\narchs = ["ioffe_mlp"]\nnorms = ["layer"]\n'
                 'optimizers = ["sgd"]\nlr = 1.0\nepochs = 2\nseeds = [0]\n')
    sweep = load_sweep(f)
    cell = "binary_fashion_mnist-ioffe_mlp-layer-sgd"
    trial = SimpleNamespace(status=TrialStatus.COMPLETED, trial_id="0001",
                            hyperparameters=SimpleNamespace(values={"cell": cell, "phase": "final", "lr": 1.0,
                                                                    "seed": 0}))
    line = progress_line(sweep, trial, {"score": 0.8329, "test_accuracy": 0.8249}, 1, 15, 63.2, 74, 346)
    assert console.widest(line) <= min(int(cols), 100)
    assert line.startswith("[ 1/15] binary_fashion") and "-sgd final lr 1 seed 0" in line
    assert " val 0.8329 test 0.8249 63.2 s | 1:14, ~5:46 left" in line.replace("\n       ", "")
    assert line.count("\n") == (cols == "80")  # at 80 columns: what trained, then how it ended


def test_a_sweep_says_what_it_does_before_keras_loads(tiny, tmp_path):
    """Importing Keras takes 10-50 s on a busy machine: the first line comes before it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "class Stop:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name in ('keras', 'tensorflow', 'jax'):\n"
            "            print('IMPORTING', name, flush=True); raise SystemExit(7)\n"
            "sys.meta_path.insert(0, Stop())\n"
            "from kbn.cli import main\n"
            f"main(['sweep', {str(tiny)!r}, '--logdir', {str(tmp_path / 'out')!r}])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = p.stdout.splitlines()
    assert p.returncode == 7 and lines[-1].startswith("IMPORTING"), (p.stdout, p.stderr)
    assert lines[0].startswith("kbn sweep tiny: loading Keras")


def test_say_wraps_long_lines_and_leaves_short_ones(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "60")
    console.say("kbn sweep: 2 local worker(s): 2 usable cores, 1 per dense-network trial; 20.3 GiB available, "
                "~0.9 GiB per worker\n[ 1/9] short   line")
    out = capsys.readouterr().out.splitlines()
    assert console.widest("\n".join(out)) <= 60 and len(out) == 4
    assert out[1].startswith("  ") and out[-1] == "[ 1/9] short   line"


def test_a_split_table_repeats_every_column_that_names_a_row():
    rows = [["Adam", f"{q} %", "44.64", "1", "1", "2 of 2", "1.0× [1.0, 1.0]", "0.7× [0.0, 51.4]"] for q in (50, 90)]
    headers = ["optimizer", "of none's best", "target %", "epochs none", "epochs batch", "reached (batch)",
               "speed-up", "speed-up (s)"]
    text = console.table(rows, headers, 70, keys=2)
    blocks = text.split("\n\n")
    assert len(blocks) == 2 and console.widest(text) <= 70
    assert all("50 %" in b and "90 %" in b for b in blocks)


def test_a_split_report_table_repeats_its_row_labels_found_from_its_cells():
    """Table 11's "row" (none / batch / rel) and the tuning table's norm name rows as the optimizer
    does: a block that drops them prints three unlabelled "SGD" lines."""
    from kbn.report.render import label_columns, render
    from kbn.report.tables import Table

    rows = [["SGD", kind, f"{70 + e}.5 ± 2.1", f"{71 + e}.0 ± 3.2", f"+0.{e}1 [-0.35, +0.45]"]
            for e, kind in enumerate(("none", "batch", "rel"))]
    assert label_columns(rows) == 2
    assert label_columns([["SGD", "74.1"], ["Adam", "—"]]) == 1
    table = Table("table11", "Table 11 — a test", ["optimizer", "row", "epoch 2", "epoch 3", "epoch 4"], rows)
    text = render([table], "text", width=40)
    blocks = [b for b in text.split("\n\n") if "SGD" in b]
    assert len(blocks) >= 2 and console.widest(text) <= 40
    for b in blocks:
        assert all(kind in b for kind in ("none", "batch", "rel")), b


@pytest.mark.slow
def test_the_library_logs_to_the_kbn_logger_and_the_cli_sets_how_much_is_printed(tiny, tmp_path, capsys):
    """A program's own handler on logging.getLogger("kbn") gets what kbn says; `kbn --log quiet`
    prints a sweep's outcome but not its progress lines; a bad level is one line."""
    import logging

    from kbn.core.config import load_sweep
    from kbn.sweep.runner import run_sweep

    got = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append((record.levelname, record.getMessage()))

    keep = Keep()
    logging.getLogger("kbn").addHandler(keep)
    try:
        run_sweep(load_sweep(tiny), tmp_path / "a")
    finally:
        logging.getLogger("kbn").removeHandler(keep)
    trials = [m for level, m in got if level == "INFO" and m.lstrip().startswith("[")]
    assert trials and all("lr" in m for m in trials)  # the progress lines, as records
    capsys.readouterr()
    assert main(["--log", "quiet", "sweep", str(tiny), "--logdir", str(tmp_path / "b"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert not any(line.lstrip().startswith("[") for line in out.splitlines()), out  # no progress lines
    assert "done" in out  # the command's own output: the status table
    assert main(["--log", "loud", "status", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err == "kbn: error: log: unknown value 'loud'; choose from: quiet, info, verbose\n"


def test_configure_logging_refuses_an_unknown_level_in_one_line():
    import kbn
    from kbn.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        kbn.configure_logging("loud")
    assert str(e.value) == "level: unknown value 'loud'; choose from: quiet, info, verbose"
