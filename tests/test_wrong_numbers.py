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


# ---------------------------------------------------------------- item 7: data


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # `tests.user_parts:...` imports from the repository root


def write_npz(make_images, path, n_train=300, n_test=60, classes=4, **replace):
    """A 4-class dataset of 20x20 grey images at `path` (arrays in `replace` put in instead); its name."""
    xtr, ytr = make_images(n_train, 0, (20, 20, 1))
    xte, yte = make_images(n_test, 1, (20, 20, 1))
    arrays = dict(x_train=xtr[..., 0], y_train=ytr % classes, x_test=xte[..., 0], y_test=yte % classes)
    np.savez(path, **{**arrays, **replace})
    return f"npz:{path}"


def train_args(tmp_path, dataset, *more):
    return ["train", "--dataset", dataset, "--epochs", "1", "--batch-size", "32", "--logdir", str(tmp_path / "r"),
            "-q", *more]


def nothing_trained(tmp_path):
    return not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


@pytest.mark.parametrize("change,expect", [
    (lambda y: np.where(np.arange(len(y)) == 7, 500, y), "npz:{f}: labels run up to 500 (501 classes) but no "
     "training example has 4–499; number the classes 0..K−1, each with training examples"),
    (lambda y: np.zeros_like(y), "npz:{f}: y_train holds one label (0): a classifier needs two classes or more"),
], ids=["label-500", "one-class"])
def test_training_labels_that_would_make_up_classes_are_refused(tmp_path, capsys, make_images, change, expect):
    f = tmp_path / "d.npz"
    y = (make_images(300, 0, (20, 20, 1))[1] % 4).astype(np.int64)
    name = write_npz(make_images, f, y_train=change(y).astype(np.int64))
    assert main(train_args(tmp_path, name)) == 2
    err = err_line(capsys)
    assert "dataset " + expect.format(f=f) in err, err
    assert nothing_trained(tmp_path)


def test_a_test_label_no_training_example_has_is_refused(tmp_path, capsys, make_images):
    f = tmp_path / "d.npz"
    y = make_images(60, 1, (20, 20, 1))[1] % 4
    name = write_npz(make_images, f, y_test=np.where(np.arange(60) == 3, 42, y))
    assert main(train_args(tmp_path, name)) == 2
    err = err_line(capsys)
    assert f"dataset npz:{f}: y_test holds label 42 (example 3), which no training example has" in err, err
    assert nothing_trained(tmp_path)


def test_nan_pixels_are_refused_not_cast_to_zero(tmp_path, capsys, make_images):
    f = tmp_path / "d.npz"
    x = make_images(60, 1, (20, 20, 1))[0][..., 0] / np.float32(255)
    x[5, 2, 3] = x[9, 0, 0] = np.nan
    name = write_npz(make_images, f, x_test=x)
    assert main(train_args(tmp_path, name)) == 2
    err = err_line(capsys)
    assert f"dataset npz:{f}: x_test holds 2 NaN pixels (the first in example 5); give finite pixels" in err, err
    assert nothing_trained(tmp_path)


@pytest.mark.slow
def test_binary_npz_retrains_on_the_changed_file_not_its_cached_copy(tmp_path, capsys, make_images):
    f = tmp_path / "d.npz"
    name = "binary_" + write_npz(make_images, f, n_train=300)
    assert main(train_args(tmp_path, name)) == 0
    write_npz(make_images, f, n_train=240)  # the file changed: other data, another sha256
    assert main(train_args(tmp_path, name, "--logdir", str(tmp_path / "r2"))) == 0
    (first,), (second,) = (list(Path(tmp_path, r).glob("*/config.json")) for r in ("r", "r2"))
    c1, c2 = (json.loads(c.read_text()) for c in (first, second))
    assert c1["components"]["dataset"]["sha256"] != c2["components"]["dataset"]["sha256"]
    assert c1["data"]["sizes"]["train"] + c1["data"]["sizes"]["validation"] == 300
    assert c2["data"]["sizes"]["train"] + c2["data"]["sizes"]["validation"] == 240  # the new file trained
