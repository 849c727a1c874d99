"""Inputs that used to change the numbers without a word (issue 21, items 7 and 8): each is refused
in one line or trains with a stated warning in config.json, through the real front end."""

import json
from pathlib import Path

import numpy as np
import pytest

from kbn.cli import main

ROOT = Path(__file__).resolve().parents[1]
HEADER = "dataset,arch,norm,optimizer,seed,epoch,split,accuracy"


def err_line(capsys) -> str:
    """stderr of a command that failed: exactly one line, kbn's, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("kbn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def accuracies(extra=()) -> list[str]:
    """3 seeds x 2 epochs of MNIST + MLP with and without batch norm (test), batch 10 points ahead."""
    rows = [HEADER]
    for norm, base in (("none", 0.80), ("batch", 0.90)):
        for s in (0, 1, 2):
            rows += [f"mnist,mlp,{norm},sgd,{s},{e},test,{base + 0.01 * e + 0.003 * s:.3f}" for e in (1, 2)]
    return rows + list(extra)


def summary_cell(out: str) -> str:
    """The summary table's SGD cell of `kbn report --format text`."""
    line = next(ln for ln in out.splitlines() if ln.startswith("SGD "))
    return line


# ---------------------------------------------------------------- item 8: kbn report --from-csv


def test_a_header_naming_a_column_twice_is_refused(tmp_path, capsys):
    rows = accuracies()
    f = tmp_path / "twice.csv"
    f.write_text("\n".join([rows[0] + ",accuracy"] + [r + ",0.1" for r in rows[1:]]) + "\n")
    assert main(["report", "--from-csv", str(f)]) == 1
    err = err_line(capsys)
    assert f"{f}: the header names accuracy twice (columns 8 and 9)" in err, err


def test_a_hash_inside_a_quoted_field_is_data_and_a_trailing_comment_still_a_comment(tmp_path, capsys):
    f = tmp_path / "plain.csv"
    f.write_text("\n".join(accuracies()) + "\n")
    assert main(["report", "--from-csv", str(f), "--format", "text"]) == 0
    plain = summary_cell(capsys.readouterr().out)
    assert "+10.00 [+10.00, +10.00] pts" in plain
    rows = accuracies()
    quoted = [rows[0]] + ['"mnist","mlp",' + r.split(",", 2)[2] + "  # from the thesis" for r in rows[1:]]
    # '#' inside quotes is part of a name: a second dataset, the same numbers
    quoted += ['"npz:/data/set#2.npz",' + r.split(",", 1)[1] for r in rows[1:]]
    f.write_text("\n".join(quoted) + "\n")
    assert main(["report", "--from-csv", str(f), "--format", "text"]) == 0
    both = summary_cell(capsys.readouterr().out)
    assert both.count("+10.00 [+10.00, +10.00] pts; rel 0.57 [0.54, 0.59]") == 2, both
    assert main(["report", "--from-csv", str(f), "--format", "csv"]) == 0
    assert "set#2" in capsys.readouterr().out


def test_one_seed_with_an_extra_epoch_is_refused_naming_its_line(tmp_path, capsys):
    f = tmp_path / "extra.csv"
    f.write_text("\n".join(accuracies(["mnist,mlp,batch,sgd,0,3,test,0.95"])) + "\n")
    assert main(["report", "--from-csv", str(f)]) == 1
    err = err_line(capsys)
    assert (f"{f} line 14: mnist mlp batch sgd test: seed 0 has epochs 1, 2, 3 but seed 1 has epochs 1, 2; "
            "every seed of an arm needs the same epochs") in err, err
    assert "still be running" not in err
