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


@pytest.mark.slow
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
    assert both.count("+10.00 [+10.00, +10.00] pts; rel +0.57 [+0.54, +0.59]") == 2, both
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


# ---------------------------------------------------------------- item 7: components of one's own

LAB = '''
import keras
from keras import layers

from kbn.models import dense_block


def _net(input_shape, units, activation="softmax"):
    inputs = keras.Input(input_shape)
    x = dense_block(layers.Flatten()(inputs), 16, "none", "relu", "h1")
    return keras.Model(inputs, layers.Dense(units, activation=activation, name="out")(x))


def five(input_shape, num_classes, norm, activation="relu"):
    return _net(input_shape, 5)


def thirty_seven(input_shape, num_classes, norm, activation="relu"):
    return _net(input_shape, 37)


def no_softmax(input_shape, num_classes, norm, activation="relu"):
    return _net(input_shape, num_classes, activation=None)


def norm_in_one_of_three(input_shape, num_classes, norm, activation="relu"):
    inputs = keras.Input(input_shape)
    x = dense_block(layers.Flatten()(inputs), 16, norm, activation, "h1")
    x = layers.Activation(activation, name="h2_act")(layers.Dense(16, name="h2")(x))
    x = layers.Dense(16, activation=activation, name="h3")(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="out")(x))


def fixed_rate(learning_rate):
    return keras.optimizers.SGD(learning_rate=0.01)  # ignores the rate it is given


def scheduled(learning_rate):
    return keras.optimizers.SGD(learning_rate=keras.optimizers.schedules.ExponentialDecay(learning_rate, 10, 0.5))
'''


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A folder on the import path holding `lab_<test>.py` (LAB) and modules a test writes; the module name."""
    folder = tmp_path / "lab"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    name = f"lab_{abs(hash(str(tmp_path))) % 10**8}"
    (folder / f"{name}.py").write_text(LAB)
    yield name
    for mod in [m for m in list(__import__("sys").modules) if m.startswith(name) or m.startswith("kbn_lab_")]:
        monkeypatch.delitem(__import__("sys").modules, mod, raising=False)


@pytest.mark.parametrize("builder,norm,expect", [
    ("five", "none", "ends in 5 outputs for the 4 classes of the data"),
    ("thirty_seven", "none", "ends in 37 outputs for the 4 classes of the data"),
    ("no_softmax", "none", "gives outputs that are not probabilities (an example's sum to "),
    ("norm_in_one_of_three", "batch", "with norm 'batch': 2 of 3 hidden layers have no BatchNormalization (Dense 'h2' goes "
     "into Activation 'h2_act' directly)"),
], ids=["5-units", "37-units", "no-softmax", "norm-in-1-of-3"])
def test_a_network_that_would_train_wrong_numbers_is_refused(tmp_path, capsys, make_images, lab, builder, norm,
                                                            expect):
    name = write_npz(make_images, tmp_path / "d.npz")
    assert main(train_args(tmp_path, name, "--arch", f"{lab}:{builder}", "--norm", norm)) == 2
    err = err_line(capsys)
    assert f"arch: '{lab}:{builder}' " in err and expect in err, err
    assert nothing_trained(tmp_path)


def test_an_optimizer_factory_that_ignores_the_rate_is_refused(tmp_path, capsys, make_images, lab):
    name = write_npz(make_images, tmp_path / "d.npz")
    assert main(train_args(tmp_path, name, "--optimizer", f"{lab}:fixed_rate", "--lr", "0.05")) == 2
    err = err_line(capsys)
    assert (f"optimizer: '{lab}:fixed_rate' made an optimizer whose learning rate is 0.01 when asked for 0.05; "
            "pass the rate it is given on to the optimizer") in err, err
    assert nothing_trained(tmp_path)


@pytest.mark.slow
def test_an_optimizer_whose_rate_cannot_be_read_trains_with_a_stated_warning(tmp_path, capsys, make_images, lab):
    name = write_npz(make_images, tmp_path / "d.npz")
    assert main(train_args(tmp_path, name, "--optimizer", f"{lab}:scheduled", "--lr", "0.05")) == 0
    err = capsys.readouterr().err
    assert (f"kbn: warning: optimizer '{lab}:scheduled': its learning rate is a ExponentialDecay, not the 0.05 "
            "asked for; config.json and metrics.csv record 0.05, which kbn cannot vouch for (config.json: lr_verified "
            "false)") in err, err
    (config,) = (tmp_path / "r").glob("*/config.json")
    assert json.loads(config.read_text())["components"]["optimizer"]["lr_verified"] is False


@pytest.mark.slow
def test_a_checked_rate_is_recorded_as_verified(tmp_path, capsys, make_images):
    name = write_npz(make_images, tmp_path / "d.npz")
    assert main(train_args(tmp_path, name, "--optimizer", "tests.user_parts:half_momentum", "--lr", "0.05")) == 0
    (config,) = (tmp_path / "r").glob("*/config.json")
    assert json.loads(config.read_text())["components"]["optimizer"]["lr_verified"] is True
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("source,expect", [
    ("import sys\nsys.exit(3)\n", "importing module '{m}' called sys.exit(3); a module kbn imports must not exit "
     "(put its script part under `if __name__ == \"__main__\":`)"),
    ("import kbn_no_such_package_xyz\n", "importing module '{m}' failed: it imports 'kbn_no_such_package_xyz', which "
     "is not installed (No module named 'kbn_no_such_package_xyz'); install it"),
], ids=["sys-exit", "inner-import"])
def test_a_module_that_exits_or_whose_own_import_fails_says_so(tmp_path, capsys, make_images, lab, source, expect):
    mod = f"kbn_lab_{lab}"
    (tmp_path / "lab" / f"{mod}.py").write_text(source)
    name = write_npz(make_images, tmp_path / "d.npz")
    assert main(train_args(tmp_path, name, "--optimizer", f"{mod}:Opt")) == 2
    err = err_line(capsys)
    assert f"optimizer: '{mod}:Opt': " + expect.format(m=mod) in err, err
    assert "PYTHONPATH" not in err
