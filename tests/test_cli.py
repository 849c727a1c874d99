import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kbn import data
from kbn.cli import main, parser
from kbn.core.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args,expect",
    [
        (["--dataset", "imagenet"], ["dataset", "'imagenet'", "fashion_mnist"]),
        (["--arch", "resnet"], ["arch", "'resnet'", "deep_mlp"]),
        (["--norm", "weight"], ["norm", "'weight'", "layer"]),
        (["--optimizer", "lion"], ["optimizer", "'lion'", "rmsprop"]),
        (["--lr", "-1"], ["lr", "-1", "positive"]),
        (["--lr", "0"], ["lr", "positive"]),
        (["--epochs", "0"], ["epochs", "0"]),
        (["--epochs", "two"], ["--epochs", "'two'"]),
        (["--data-dir", "/no/such/folder"], ["data_dir", "/no/such/folder"]),
    ],
)
def test_bad_input_is_one_line_naming_value_and_choices(args, expect, tmp_path, capsys):
    code = main(["train", "--logdir", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("kbn: error: ") and err.count("\n") == 1, err
    for part in expect:
        assert part in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_missing_data_explains_how_to_get_it(tmp_path, capsys, monkeypatch, debian_dirs):
    debian_dirs("mnist", [])
    code = main(["train", "--dataset", "mnist", "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "no data for 'mnist'" in err and "IDX" in err and "kbn data prepare mnist" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_command_line_trains_on_real_fashion_mnist(tmp_path, fashion_dir):
    env = dict(os.environ, KBN_DATA_DIR=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "kbn", "train", "--dataset", "fashion_mnist", "--arch", "mlp", "--norm", "batch",
           "--optimizer", "adam", "--lr", "0.001", "--epochs", "2", "--seed", "0", "--subset", "5000",
           "--logdir", str(tmp_path / "logs")]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "logs" / "fashion_mnist-mlp-batch-adam-lr0.001-s0-n5000"
    assert f"logs in {run}" in out.stdout
    assert "epoch 2/2" in out.stdout
    acc = float(out.stdout.split("test accuracy ")[1].split(",")[0])
    assert acc > 0.75  # 5k examples, 2 epochs
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.csv", "result.json"} <= names
    assert any(n.startswith("events.out.tfevents.") for n in names)  # one TensorBoard run, no split sub-runs


def test_data_prepare_reports_splits_and_cache(tmp_path, capsys, make_idx_folder):

    make_idx_folder(tmp_path / "raw")
    assert main(["data", "prepare", "mnist", "--data-dir", str(tmp_path / "raw")]) == 0
    out = capsys.readouterr().out
    assert "mnist: {'train': 50, 'validation': 10, 'test': 12}" in out and "mnist.npz" in out


@pytest.mark.slow  # builds the networks in a child process to read their convolutions
def test_backend_choice_follows_the_measurements(monkeypatch):
    from kbn.training import backend

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(backend.shutil, "which", lambda name: None)  # no GPU here
    assert backend.choose_backend(["mlp", "deep_mlp"]) == "jax"
    assert backend.choose_backend(["mlp", "cnn"]) == "tensorflow"  # oneDNN convolutions are 3x faster on CPU
    monkeypatch.setattr(backend.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    assert backend.choose_backend(["deep_cnn"]) == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert backend.choose_backend(["mlp"]) == "tensorflow"


def test_bench_rejects_bad_options(capsys):
    assert main(["bench", "--archs", "resnet"]) == 2
    assert "archs" in capsys.readouterr().err
    assert main(["bench", "--ks", "4,0"]) == 2
    assert "ks" in capsys.readouterr().err


def _bad_logdirs(tmp_path):
    (tmp_path / "a-file").write_text("x")
    return ["/proc/kbn", str(tmp_path / "a-file")]


def _one_line_error(capsys, *parts):
    err = capsys.readouterr().err
    assert err.startswith("kbn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err


@pytest.mark.parametrize("which", [0, 1])
def test_train_into_an_unwritable_logdir_is_one_line(which, tmp_path, capsys, make_idx_folder):

    make_idx_folder(tmp_path / "raw")
    logdir = _bad_logdirs(tmp_path)[which]
    code = main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "raw"), "--epochs", "1",
                 "--logdir", logdir])
    assert code == 2
    _one_line_error(capsys, "logdir", logdir)


@pytest.mark.parametrize("which", [0, 1])
def test_sweep_into_an_unwritable_logdir_is_one_line(which, tmp_path, capsys, monkeypatch):
    from kbn.sweep import runner

    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: pytest.fail("trained into a bad logdir"))
    logdir = _bad_logdirs(tmp_path)[which]
    assert main(["sweep", str(ROOT / "sweeps" / "smoke.toml"), "--logdir", logdir]) == 2
    _one_line_error(capsys, "logdir", logdir)


@pytest.mark.parametrize("args,field,value", [
    (["--epochs", "0"], "epochs", "0"),
    (["--examples", "0"], "examples", "0"),
    (["--examples", "-5"], "examples", "-5"),
    (["--cnn-examples", "0"], "cnn-examples", "0"),
])
def test_bench_rejects_non_positive_counts_before_measuring(args, field, value, capsys, monkeypatch):
    from kbn.tools import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("measured with a bad option"))
    assert main(["bench", *args]) == 2
    _one_line_error(capsys, f"{field}: got {value}", "a positive integer")


def test_bench_rejects_an_unwritable_out_before_measuring(tmp_path, capsys, monkeypatch):
    from kbn.tools import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("measured, then could not write"))
    assert main(["bench", "--out", str(tmp_path)]) == 2  # a folder, not a file
    _one_line_error(capsys, "out", str(tmp_path))
    assert main(["bench", "--out", "/proc/kbn/bench.md"]) == 2
    _one_line_error(capsys, "out", "/proc/kbn")
    assert main(["bench", "--out", str(tmp_path / "bench.json")]) == 2  # the raw JSON would overwrite the table
    _one_line_error(capsys, "out", "bench.json", ".md")


@pytest.mark.parametrize("argv,hint", [
    (["frobnicate"], "(see 'kbn --help')"),
    ([], "(see 'kbn --help')"),
    (["train", "--epochs", "two"], "(see 'kbn train --help')"),
    (["data", "frobnicate"], "(see 'kbn data --help')"),
])
def test_usage_errors_point_at_the_right_help(argv, hint, capsys):
    assert main(argv) == 2
    _one_line_error(capsys, hint)


def test_data_prepare_checks_every_name_before_preparing_any(tmp_path, capsys, make_idx_folder):

    make_idx_folder(tmp_path / "raw")
    assert main(["data", "prepare", "mnist", "imagenet", "--data-dir", str(tmp_path / "raw")]) == 2
    _one_line_error(capsys, "dataset", "'imagenet'", "fashion_mnist")
    assert not (data.cache_dir() / "mnist.npz").exists()


@pytest.mark.parametrize("args,expect", [
    (["tensorboard", "{d}", "--port", "-1"], "port: got -1"),
    (["tensorboard", "{d}", "--host", "999.1.1.1"], "host: cannot resolve '999.1.1.1'"),
    (["bench", "--backends", "torch"], "backends: torch is not installed here"),
])
def test_more_options_that_cannot_work_are_one_line(tmp_path, capsys, args, expect):
    if importlib.util.find_spec("torch") and "torch" in args:
        pytest.skip("torch is installed here")
    code = main([a.format(d=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("kbn: error: ") and expect in err, err


def test_an_unusable_data_cache_is_one_line(tmp_path, capsys, monkeypatch, make_idx_folder):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path / "afile"))

    make_idx_folder(tmp_path / "raw")
    assert main(["data", "prepare", "mnist", "--data-dir", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KBN_DATA_DIR: cannot use" in err, err


# ---------------------------------------------------------------- train options from TrainConfig


def test_every_train_setting_is_an_option_with_its_default_and_help():
    train = parser()._subparsers._group_actions[0].choices["train"]
    options = {a.dest: a for a in train._actions}
    for field in dataclasses.fields(TrainConfig):
        action = options[field.name]
        assert action.option_strings == ["--" + field.name.replace("_", "-")]
        assert action.default == field.default and action.help.startswith(field.metadata["help"])
        if field.default not in (None, False):  # --help says what an option left out means
            assert action.help.endswith(f"(default: {field.default})"), action.help
    from kbn.core import registry

    for kind in registry.KINDS:  # and the registry's names for a component
        assert f"kbn knows: {', '.join(registry.REGISTRIES[kind])} (default:" in options[kind].help
    defaults = parser().parse_args(["train"])
    assert {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)} == TrainConfig().to_dict()


def test_option_values_reach_the_config_typed():
    args = parser().parse_args(["train", "--lr", "0.5", "--batch-size", "60", "--eval-every-steps", "50",
                                "--test-every-epoch"])
    assert (args.lr, args.batch_size, args.eval_every_steps, args.test_every_epoch) == (0.5, 60, 50, True)
    assert isinstance(args.lr, float) and isinstance(args.batch_size, int)


@pytest.mark.slow
def test_train_with_mixed_precision_says_so_and_records_it(tmp_path, capsys, write_cache):
    import json

    write_cache()  # 256 generated training images
    code = main(["train", "--dataset", "mnist", "--norm", "batch", "--epochs", "2", "--batch-size", "32",
                 "--precision", "mixed_bfloat16", "--logdir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "trained in mixed_bfloat16" in out.splitlines()[0], out
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["precision"] == config["precision"]["policy"] == "mixed_bfloat16"
    assert config["precision"]["compute_dtypes"] == ["bfloat16"]


@pytest.mark.parametrize("argv, field", [
    (["train", "--norm", "batchy"], "norm"),
    (["train", "--epochs", "0"], "epochs"),
    (["sweep", str(ROOT / "sweeps" / "smoke.toml"), "--precision", "fp8"], "precision"),
])
def test_a_bad_setting_is_refused_before_the_networks_are_probed(argv, field, monkeypatch, capsys):
    """Which backend trains faster is read off the built networks in a child process (seconds): a
    typo must not wait for it, and --precision's error names the option, not the sweep file."""
    from kbn.training import backend

    monkeypatch.delenv("KERAS_BACKEND", raising=False)  # restored afterwards
    monkeypatch.setattr(backend, "probe_conv", lambda *a: pytest.fail("probed a network before the checks"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kbn: error: {field}: ") and err.count("\n") == 1, err


@pytest.mark.slow
def test_kbn_train_on_tensorflow_starts_with_kbns_own_line(tmp_path, write_cache):
    """TensorFlow's C++ start-up lines (absl's, oneDNN's, CUDA's) write to file descriptor 2 whatever
    TF_CPP_MIN_LOG_LEVEL says: kbn puts them in a file, so the command's first line is kbn's; `--log
    verbose` names the file, which holds them."""
    write_cache("mnist")
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = subprocess.run([sys.executable, "-m", "kbn", "--log", "verbose", "train", "--dataset", "mnist", "--arch",
                          "tests.user_parts:small_cnn", "--epochs", "1", "--logdir", str(tmp_path / "runs")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (out.stderr + out.stdout).splitlines()
    native = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog")  # glog-style C++ lines; absl's first
    assert not any(native.search(ln) for ln in lines), lines[:5]
    named = [ln for ln in lines if ln.startswith("kbn: TensorFlow's own start-up lines: ")]
    assert len(named) == 1
    assert "oneDNN custom operations" in Path(named[0].split(": ", 2)[2]).read_text()
    assert out.stdout.startswith("kbn: ")
