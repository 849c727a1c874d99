"""Bad inputs a user gives kbn (options, sweep files, environment, data files, import strings, damaged
sweep folders): each ends in one line on stderr naming the field, path or value and what to do, exit
status 2, never a traceback and never a silent wrong run (issue 21, items 5 and 6)."""

import os
from pathlib import Path

import pytest

from kbn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def one_line(capsys, code, *parts, exit=2):
    err = capsys.readouterr().err
    assert code == exit, err
    assert err.startswith("kbn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    return err


# ---------------------------------------------------------------- options and sweep files


@pytest.mark.parametrize("args,parts", [
    (["--seed", str(2**32)], ["seed", str(2**32), "4294967295"]),
    (["--seed", str(2**63 - 2)], ["seed", str(2**63 - 2)]),
    (["--subset", "10", "--batch-size", "32"], ["batch_size", "32", "subset", "10"]),
    (["--logdir", ""], ["logdir", "''"]),
    (["--precision", "float16"], ["precision", "'float16'", "float32, mixed_bfloat16"]),
])
def test_train_options_that_cannot_work(args, parts, tmp_path, capsys, monkeypatch, write_cache):
    write_cache()
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--dataset", "mnist", "--logdir", "lg", "--quiet", *args])
    one_line(capsys, code, *parts)
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "lg"])  # no run trained
    assert not any(tmp_path.rglob("config.json"))


def test_batch_larger_than_the_training_set_is_one_line(tmp_path, capsys, write_cache):
    write_cache()  # 256 training examples
    code = main(["train", "--dataset", "mnist", "--logdir", str(tmp_path), "--batch-size", "300", "--quiet"])
    one_line(capsys, code, "batch_size", "300", "256")
    assert not any(tmp_path.rglob("config.json"))


def test_eval_every_steps_beyond_the_run_is_one_line(tmp_path, capsys, write_cache):
    write_cache()  # 256 examples, batch 32: 8 steps an epoch
    code = main(["train", "--dataset", "mnist", "--logdir", str(tmp_path), "--batch-size", "32", "--epochs", "1",
                 "--eval-every-steps", "1000", "--quiet"])
    one_line(capsys, code, "eval_every_steps", "1000", "8 steps")
    assert not any(tmp_path.rglob("config.json"))


@pytest.mark.parametrize("edit,parts", [
    (("seeds = [0]", f"seeds = [{2**63 - 2}]"), ["seeds", str(2**63 - 2), "4294967295"]),
    (("seeds = [0]", f"seeds = [{2**32}]"), ["seeds", str(2**32)]),
    (("seeds = [0]", f"seeds = [{2**32 - 1}]"), ["search.seeds", str(2**32 - 1)]),  # default search seed: max + 1
    (("[search]", f"[search]\nseeds = [{2**32}]"), ["search.seeds", str(2**32)]),
    (('name = "tiny"', 'name = ".."'), ["name", "'..'"]),
    (('name = "tiny"', 'name = "."'), ["name", "'.'"]),
    (("batch_size = 32", "batch_size = 32\nsubset = 16"), ["batch_size", "32", "subset", "16"]),
    (("epochs = 1", 'epochs = 1\nprecision = "bf16"'), ["precision", "'bf16'", "float32, mixed_bfloat16"]),
])
def test_sweep_fields_that_cannot_work(edit, parts, tmp_path, capsys, monkeypatch, tiny_text):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "s.toml"
    f.write_text(tiny_text.replace("seeds = [0, 1]", "seeds = [0]").replace(*edit))
    code = main(["sweep", str(f)])
    one_line(capsys, code, str(f), *parts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]  # nothing written


def test_a_sweep_file_that_is_not_utf8_is_one_line(tmp_path, capsys, tiny_text):
    f = tmp_path / "s.toml"
    f.write_bytes(tiny_text.replace('"tiny"', '"t\xe9st"').encode("latin-1"))
    one_line(capsys, main(["sweep", str(f)]), str(f), "UTF-8")


def test_an_empty_sweep_logdir_is_one_line(tmp_path, capsys, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    one_line(capsys, main(["sweep", str(tiny), "--logdir", ""]), "logdir", "''")
    assert not (tmp_path / "logs").exists()


def test_sweep_eval_every_steps_beyond_the_search_is_one_line(tmp_path, capsys, tiny_text, write_cache):
    write_cache()  # 256 examples, batch 32: 8 steps an epoch
    f = tmp_path / "s.toml"
    f.write_text(tiny_text.replace("batch_size = 32", "batch_size = 32\neval_every_steps = 100"))
    one_line(capsys, main(["sweep", str(f), "--logdir", str(tmp_path / "out")]), "eval_every_steps", "100",
             "8 steps")
    assert not (tmp_path / "out" / "tuner").exists()


def test_a_bad_oracle_timeout_is_one_line(tmp_path, capsys, monkeypatch, tiny):
    monkeypatch.setenv("KBN_ORACLE_TIMEOUT", "abc")
    code = main(["sweep", str(tiny), "--worker", "--oracle", "127.0.0.1:9", "--logdir", str(tmp_path / "out")])
    one_line(capsys, code, "KBN_ORACLE_TIMEOUT", "'abc'")


def test_the_oracle_timeout_is_read_at_import_without_failing():
    import subprocess
    import sys

    env = {**os.environ, "KBN_ORACLE_TIMEOUT": "abc", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", "import kbn.sweep.distribute"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- npz files of one's own

def _npz(path, make_images, n_train=60, n_test=20, train_shape=(20, 20, 1), test_shape=(20, 20, 1)):
    import numpy as np

    xtr, ytr = make_images(n_train, 0, train_shape)
    xte, yte = make_images(n_test, 1, test_shape)
    np.savez(path, x_train=xtr, y_train=ytr % 4, x_test=xte, y_test=yte % 4)
    return f"npz:{path}"


@pytest.mark.parametrize("kind,parts", [
    ({"n_train": 0}, ["x_train", "no examples"]),
    ({"n_test": 0}, ["x_test", "no examples"]),
    ({"test_shape": (16, 16, 1)}, ["x_train", "(20, 20, 1)", "x_test", "(16, 16, 1)"]),
    ({"test_shape": (20, 20, 3)}, ["x_train", "(20, 20, 1)", "x_test", "(20, 20, 3)"]),
    ("npy", ["not an .npz archive", "np.savez"]),
])
def test_npz_files_that_cannot_be_a_dataset(kind, parts, tmp_path, capsys, make_images):
    import numpy as np

    path = tmp_path / "mine.npz"
    if kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros((10, 4, 4), np.uint8))
        name = f"npz:{path}"
    else:
        name = _npz(path, make_images, **kind)
    for argv in (["data", "prepare", name], ["train", "--dataset", name, "--logdir", str(tmp_path / "lg"), "--quiet"]):
        one_line(capsys, main(argv), str(path), *parts)
    assert not (tmp_path / "lg").exists() or not any((tmp_path / "lg").rglob("config.json"))


def test_data_prepare_npz_says_it_reads_the_file_not_a_cache(tmp_path, capsys, make_images):
    from kbn import data

    name = _npz(tmp_path / "mine.npz", make_images)
    assert main(["data", "prepare", name]) == 0
    out = capsys.readouterr().out
    assert str(data.cache_path(name)) not in out and not data.cache_path(name).exists()
    assert f"read from {tmp_path / 'mine.npz'} each time, never cached" in out, out


# ---------------------------------------------------------------- user components (import strings)

BAD = "tests.bad_parts"


@pytest.mark.parametrize("option,spec,parts", [
    ("--optimizer", "raising_factory", ["RuntimeError", "the lab's optimizer needs a licence key"]),
    ("--norm", "NeedsArgNorm", ["takes (k, **kwargs)", "kbn calls it as Layer(name=...)", "'k'", "kbn.NormLayerClass"]),
    ("--norm", "RaisesInCall", ["ValueError", "RaisesInCall refuses rank-2 inputs"]),
    ("--arch", "unbuilt_sequential", ["not built", "keras.Input"]),
    ("--arch", "for_cifar", ["(32, 32, 3)", "(28, 28, 1)", "input_shape"]),
])
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_failing_user_component_is_one_line_naming_it(command, option, spec, parts, tmp_path, capsys,
                                                        monkeypatch, write_cache, tiny_text):
    monkeypatch.syspath_prepend(str(ROOT))
    write_cache()
    full = f"{BAD}:{spec}"
    if command == "train":
        argv = ["train", "--dataset", "mnist", "--logdir", str(tmp_path / "lg"), "--quiet", option, full]
    else:
        field = {"--optimizer": "optimizers", "--norm": "norms", "--arch": "archs"}[option]
        f = tmp_path / "s.toml"
        text = tiny_text.replace('norms = ["none", "batch"]', 'norms = ["none"]')
        f.write_text("\n".join(f'{field} = ["{full}"]' if line.startswith(f"{field} =") else line
                               for line in text.splitlines()))
        argv = ["sweep", str(f), "--logdir", str(tmp_path / "lg")]
    one_line(capsys, main(argv), repr(full), *parts)
    assert not any((tmp_path / "lg").rglob("config.json")) if (tmp_path / "lg").exists() else True


# ---------------------------------------------------------------- damaged sweep folders


@pytest.fixture
def finished_copy(finished_tiny_sweep, tmp_path, monkeypatch):
    """A copy of the finished tiny sweep (its dataset in this test's cache), and its sweep file."""
    import shutil

    from conftest import TINY, write_cache

    write_cache()
    out = tmp_path / "out"
    shutil.copytree(finished_tiny_sweep, out)
    (tmp_path / "tiny.toml").write_text(TINY)
    return out, tmp_path / "tiny.toml"


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]"])
def test_a_garbled_components_json_is_one_line_on_resume(text, finished_copy, capsys):
    out, f = finished_copy
    (out / "components.json").write_text(text)
    one_line(capsys, main(["sweep", str(f), "--logdir", str(out)]), str(out / "components.json"), "delete it")


def _first_completed_trial(out):
    import json

    for t in sorted((out / "tuner").glob("trial_*/trial.json")):
        state = json.loads(t.read_text())
        if state["status"] == "COMPLETED" and state["hyperparameters"]["values"]["phase"] == "coarse":
            return t, state
    raise AssertionError("no completed coarse trial")


@pytest.mark.slow
def test_a_trial_json_whose_score_is_text_is_a_problem_not_a_traceback(finished_copy, capsys):
    import json

    import kbn

    out, f = finished_copy
    t, state = _first_completed_trial(out)
    state["score"] = "0.9"
    t.write_text(json.dumps(state))
    tid = t.parent.name
    assert main(["status", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"tuner/{tid}/trial.json" in captured.out and "score" in captured.out, captured.out
    assert "Traceback" not in captured.err
    assert any(tid in p for p in kbn.open_sweep(out).problems())
    assert main(["report", str(out), "--format", "csv"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert main(["sweep", str(f), "--logdir", str(out)]) == 0  # resume: the trial is set aside and redone
    err = capsys.readouterr()
    assert f"tuner/{tid}/trial.json" in err.out + err.err and "Traceback" not in err.err


@pytest.mark.slow
def test_compare_batch_with_no_cell_in_common_is_one_line(tmp_path, capsys, write_cache):
    write_cache()
    for d, batch, opt in (("a", "32", "sgd"), ("b", "64", "adam")):
        assert main(["train", "--dataset", "mnist", "--epochs", "1", "--batch-size", batch, "--optimizer", opt,
                     "--logdir", str(tmp_path / d), "--quiet"]) == 0
    capsys.readouterr()
    code = main(["report", str(tmp_path / "a"), "--compare-batch", str(tmp_path / "b")])
    one_line(capsys, code, str(tmp_path / "a"), str(tmp_path / "b"), "no cell")


@pytest.mark.slow
@pytest.mark.parametrize("key,value", [("lr", 0.0123), ("seed", 7)])
def test_a_trial_json_edited_off_the_sweeps_plan_is_named_and_redone(key, value, finished_copy, capsys):
    import json

    out, f = finished_copy
    t, state = _first_completed_trial(out)
    state["hyperparameters"]["values"][key] = value
    t.write_text(json.dumps(state))
    tid = t.parent.name
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"tuner/{tid}/trial.json: coarse" in status or f"tuner/{tid}/trial.json: seed" in status, status
    assert str(value) in status
    assert main(["sweep", str(f), "--logdir", str(out)]) == 0
    resumed = capsys.readouterr()
    assert f"tuner/{tid}/trial.json is not this sweep's work" in resumed.out + resumed.err
    assert "[ 13/12]" not in resumed.out and "/12]" in resumed.out or "already done" in resumed.out


def test_a_deleted_sweep_json_and_another_select_on_is_refused(finished_copy, capsys):
    out, f = finished_copy
    (out / "sweep.json").unlink()
    f.write_text(f.read_text().replace("batch_size = 32", 'batch_size = 32\nselect_on = "test"'))
    one_line(capsys, main(["sweep", str(f), "--logdir", str(out)]), str(out), "select_on 'validation' vs 'test'")


@pytest.mark.slow
def test_a_dataset_file_deleted_mid_sweep_stops_it_in_one_line(tmp_path, capsys, monkeypatch, make_images, tiny_text):
    import json

    from kbn.sweep import runner

    name = _npz(tmp_path / "mine.npz", make_images, n_train=120)
    f = tmp_path / "s.toml"
    f.write_text(tiny_text.replace('["mnist"]', f'["{name}"]').replace('norms = ["none", "batch"]', 'norms = ["none"]'))
    orig = runner.preflight

    def preflight_then_delete(*a, **k):  # the data is in memory; its file goes before the first trial
        out = orig(*a, **k)
        (tmp_path / "mine.npz").unlink()
        return out

    monkeypatch.setattr(runner, "preflight", preflight_then_delete)  # what run_sweep calls
    code = main(["sweep", str(f), "--logdir", str(tmp_path / "out"), "--workers", "1"])
    one_line(capsys, code, str(tmp_path / "mine.npz"), "restore it")
    for c in (tmp_path / "out").rglob("config.json"):
        assert json.loads(c.read_text())["components"]["dataset"]["sha256"] is not None


@pytest.mark.parametrize("damage", ["truncate", "invalid"])
def test_status_and_a_resume_give_one_advice_for_a_damaged_sweep_json(damage, finished_copy, capsys):
    import json

    out, f = finished_copy
    sj = out / "sweep.json"
    if damage == "truncate":
        sj.write_text(sj.read_text()[:50])
    else:
        sj.write_text(json.dumps({**json.loads(sj.read_text()), "epochs": 0}))
    status = one_line(capsys, main(["status", str(out)]), str(sj))
    resume = one_line(capsys, main(["sweep", str(f), "--logdir", str(out)]), str(sj))
    advice = status.rsplit("; ", 1)[1]
    assert "delete it" in advice and resume.endswith(advice), (status, resume)


@pytest.mark.parametrize("argv", [["status", ""], ["plot", ""], ["export", ""], ["report", "", "--format", "csv"],
                                  ["tensorboard", ""], ["sweep", ""], ["train", "--data-dir", ""]])
def test_an_empty_path_is_never_the_current_folder(argv, tmp_path, capsys, monkeypatch, write_finished_run):
    monkeypatch.chdir(tmp_path)
    write_finished_run(tmp_path / "lg" / "run")  # a run the empty path would otherwise find
    one_line(capsys, main(argv), "''")


def test_a_resume_at_another_precision_is_refused_in_one_line(finished_copy, capsys):
    """--precision overrides the file's, and sweep.json holds it: a resume that changes it is refused."""
    out, f = finished_copy
    one_line(capsys, main(["sweep", str(f), "--logdir", str(out), "--precision", "mixed_bfloat16"]), str(out),
             "precision differ")
    (out / "sweep.json").unlink()  # the runs on disk say what they trained at
    one_line(capsys, main(["sweep", str(f), "--logdir", str(out), "--precision", "mixed_bfloat16"]), str(out),
             "precision")


def test_a_bad_sweep_precision_option_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line(capsys, main(["sweep", str(tiny), "--precision", "fp8"]), "precision", "'fp8'", "float32, mixed_bfloat16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]  # nothing written
