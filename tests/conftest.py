"""Shared fixtures: isolated cache, no network, tiny learnable data, and the helpers that tests of
several modules need (generated images and IDX folders, a generated dataset in the cache, a tiny
sweep file, reading a sweep folder's trials, starting `python -m kbn`). Test files take these as
fixtures; none imports another test file. (Child processes that tests start may `import conftest`
for `make_images`: they are not test files.)"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KBN_OFFLINE"] = "1"  # tests never touch the network
# each backend's own path is tested as it is: a conv net on JAX stays on JAX (tests/test_handoff.py turns it on)
os.environ.setdefault("KBN_HANDOFF", "off")
# compiled JAX steps shared by this session's tests, never the user's cache
os.environ.setdefault("KBN_JAX_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="kbn-jax-cache-"))

import gzip
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fashion_dir() -> str:
    """The real Fashion-MNIST's Debian folder; the test is skipped where it is not installed."""
    if not os.path.isdir(FASHION_DIR):
        pytest.skip("apt-get install dataset-fashion-mnist")
    return FASHION_DIR


@pytest.fixture
def debian_dirs(monkeypatch):
    """`debian_dirs(name, folders)`: where kbn looks for a built-in dataset's Debian package, for one test."""
    import dataclasses
    from types import MappingProxyType

    from kbn.core import registry

    def set_dirs(name, folders):
        rec = dataclasses.replace(registry.DATASETS[name], debian_dirs=tuple(str(f) for f in folders))
        datasets = MappingProxyType({**registry.DATASETS, name: rec})
        monkeypatch.setattr(registry, "DATASETS", datasets)
        monkeypatch.setattr(registry, "REGISTRIES", MappingProxyType({**registry.REGISTRIES, "dataset": datasets}))

    return set_dirs


@pytest.fixture
def signals_to_kbn():
    """kbn.core.interrupts takes SIGINT and SIGTERM for one test; pytest's handlers come back after it."""
    import signal

    from kbn.core import interrupts

    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    interrupts.install()
    yield
    for s, h in before.items():
        signal.signal(s, h)
    interrupts._requested.clear()


@pytest.fixture(autouse=True)
def _kbn_prints():
    """kbn's log printed as the CLI prints it (pytest's own log capture would otherwise take the
    records first): tests read it from capsys, as a user reads the terminal."""
    from kbn.core import console

    console.configure()
    yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KBN_DATA_DIR", str(tmp_path_factory.mktemp("kbn-cache")))
    monkeypatch.setenv("KBN_OFFLINE", "1")
    # tests that read a phrase out of text output read it unwrapped; tests of the fitting set COLUMNS
    # themselves (tests/test_console.py)
    monkeypatch.setenv("COLUMNS", "100000")
    for k in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(k, raising=False)  # a worker's address set by one test must not make the next a client


def make_images(n, seed=0, shape=(28, 28, 1)):
    """Learnable images: class k lights a 4x4 block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = (rng.random((n,) + shape) * 60).astype(np.uint8)
    for i, k in enumerate(y):
        r, c = 2 + 6 * (k // 4), 2 + 6 * (k % 4)
        x[i, r : r + 4, c : c + 4, :] = 255
    return x, y


@pytest.fixture(name="make_images", scope="session")
def _make_images():
    """`make_images(n, seed=0, shape=(28, 28, 1))`: learnable uint8 images and their labels."""
    return make_images


def generated_dataset(name="fashion_mnist", sizes=(512, 128, 128)):
    """A kbn Dataset of make_images (train, validation, test sizes), as kbn.data.load returns one
    (child processes use it too)."""
    from kbn.data.loading import Dataset

    parts = {}
    for split, n, seed in zip(("train", "validation", "test"), sizes, (0, 1, 2)):
        x, y = make_images(n, seed)
        parts[f"x_{split}"] = x.astype(np.float32) / 255
        parts[f"y_{split}"] = y.astype(np.int32)
    return Dataset(name=name, source="generated", **parts)


@pytest.fixture
def tiny_dataset():
    return generated_dataset()


TINY = """
name = "tiny"
datasets = ["mnist"]
archs = ["mlp"]
norms = ["none", "batch"]
optimizers = ["sgd"]
epochs = 1
seeds = [0, 1]
batch_size = 32
[search]
coarse = [0.01, 0.1, 1.0]
fine_per_side = 1
"""


def write_cache(name="mnist", inf_pixels=False):
    """A generated dataset in the kbn cache, so sweeps (and their subprocesses) load it by name."""
    from kbn import data

    arrays = {}
    for split, n, seed in (("train", 256, 0), ("validation", 64, 1), ("test", 64, 2)):
        x, y = make_images(n, seed)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    data.write_cache(name, arrays, "generated")
    if inf_pixels:  # float32 inf after scaling: every training loss is NaN
        orig = data.load

        def load(*a, **k):
            ds = orig(*a, **k)
            ds.x_train[:] = np.inf
            return ds

        return load
    return None


@pytest.fixture(name="write_cache", scope="session")
def _write_cache():
    """`write_cache(name="mnist", inf_pixels=False)`: a generated dataset in this test's kbn cache."""
    return write_cache


@pytest.fixture
def tiny_text() -> str:
    """The tiny sweep file's text (TINY), for tests that write a variant of it."""
    return TINY


@pytest.fixture
def tiny(tmp_path):
    """The tiny sweep file (TINY) in tmp_path, its generated dataset in the cache."""
    write_cache()
    f = tmp_path / "tiny.toml"
    f.write_text(TINY)
    return f


@pytest.fixture(scope="session")
def finished_tiny_sweep(tmp_path_factory):
    """A real 2-cell sweep (TINY: none and batch, 2 seeds, 1 epoch; ~20 s), run once per test session,
    for tests that only read a finished sweep's folder."""
    from kbn.core.config import load_sweep
    from kbn.sweep.runner import run_sweep

    root = tmp_path_factory.mktemp("finished-tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KBN_DATA_DIR", str(root / "cache"))
        write_cache()
        (root / "tiny.toml").write_text(TINY)
        assert run_sweep(load_sweep(root / "tiny.toml"), root / "out", log=lambda *_: None) == 0
    return root / "out"


def _write_idx(path, arr, compress=True):
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def _make_idx_folder(folder: Path, n_train=60, n_test=12, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr = make_images(n_train, 0)
    xte, yte = make_images(n_test, 1)
    sfx = ".gz" if compress else ""
    _write_idx(folder / f"train-images-idx3-ubyte{sfx}", xtr[..., 0], compress)
    _write_idx(folder / f"train-labels-idx1-ubyte{sfx}", ytr, compress)
    _write_idx(folder / f"t10k-images-idx3-ubyte{sfx}", xte[..., 0], compress)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", yte, compress)
    return xtr, ytr, xte, yte


@pytest.fixture
def write_idx():
    """`write_idx(path, arr, compress=True)`: one IDX file (gzipped by default)."""
    return _write_idx


@pytest.fixture
def make_idx_folder():
    """`make_idx_folder(folder, n_train=60, n_test=12, compress=True)`: the four MNIST-style IDX files of
    generated images; returns (x_train, y_train, x_test, y_test)."""
    return _make_idx_folder


# ---------------------------------------------------------------- sweep folders and the kbn command


@pytest.fixture
def write_finished_run():
    """`write_finished_run(folder, rows=3, status="finished")`: a run folder as kbn.runs.runlog writes one,
    `rows` evaluation periods with made-up numbers (no training); returns its RunLog."""
    from kbn.runs.runlog import RunLog

    def write(folder, rows=3, status="finished"):
        log = RunLog(folder)
        log.start({"settings": {"seed": 0}, "schedule": {"periods": rows}})
        last = {}
        for e in range(1, rows + 1):
            last = {"epoch": e, "step": 10 * e, "loss": 1.0 / e, "accuracy": 0.5, "val_loss": 1.0,
                    "val_accuracy": 0.5 + e / 100, "lr": 0.1, "wall_time": e}
            if status == "diverged" and e == rows:
                last = {"epoch": e, "step": 10 * e, "loss": float("nan"), "lr": 0.1, "wall_time": e}
            log.row(last, tb_step=e)
        log.close({"status": status, "metrics": {"val_accuracy": last.get("val_accuracy", 0.1), "loss": last["loss"]}})
        return log

    return write


def _progress_times(lines) -> list[tuple[int, int]]:
    """(elapsed, ETA) in seconds from each sweep progress line ("... | 1:02, ~0:09 left": elapsed, left)."""
    import re

    def seconds(hms):
        return sum(int(p) * 60 ** i for i, p in enumerate(reversed(hms.split(":"))))

    return [(seconds(m[1]), seconds(m[2])) for line in lines if (m := re.search(r"\| (\S+), ~(\S+) left", line))]


@pytest.fixture
def progress_times():
    """`progress_times(lines)`: (elapsed, ETA) in seconds per sweep progress line."""
    return _progress_times


def _trial_states(logdir) -> dict:
    out = {}
    for p in sorted(Path(logdir, "tuner").glob("trial_*/trial.json")):
        s = json.loads(p.read_text())
        out[s["trial_id"]] = s
    return out


@pytest.fixture
def trial_states():
    """`trial_states(logdir)`: trial id -> its Keras Tuner trial.json, as on disk."""
    return _trial_states


@pytest.fixture
def chosen_lrs():
    """`chosen_lrs(logdir)`: cell key -> the learning rate its search chose (None: not yet)."""
    from kbn.sweep.status import folder_progress

    return lambda logdir: {k: p["chosen"] for k, p in folder_progress(Path(logdir)).progress.items()}


@pytest.fixture
def kbn_process():
    """`kbn_process(args, **popen_kw)`: `python -m kbn ARGS` started from the repository, stdout and
    stderr together as text."""
    def start(args, **kw):
        return subprocess.Popen([sys.executable, "-m", "kbn", *args], cwd=ROOT, env=dict(os.environ),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    return start


@pytest.fixture
def tensorflow_child():
    """`tensorflow_child(code, *args, timeout=300)`: `python -c CODE ARGS` from the repository on the
    TensorFlow backend (Keras picks its backend at import: a fresh process); its stdout once it
    succeeded."""
    def run(code, *args, timeout=300):
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                             cwd=ROOT, timeout=timeout)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    return run


@pytest.fixture
def wait_for_completed():
    """`wait_for_completed(logdir, n, proc, timeout=240)`: returns once n trials of the sweep in
    `logdir` completed; fails if `proc` ends or the time runs out first."""
    def wait(out, n, proc, timeout=240):
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and sum(s["status"] == "COMPLETED" for s in _trial_states(out).values()) >= n:
                return
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} trials completed in {timeout} s")

    return wait


COLLAPSING = """
name = "collapsing"
# deep MLP without a norm, SGD + momentum at 0.07 on 10,000 real Fashion-MNIST images: its runs learn
# for a few epochs and fall to chance (or never leave it); with batch norm the same rate trains
lr = 0.07
datasets = ["fashion_mnist"]
archs = ["deep_mlp"]
norms = ["none", "batch"]
optimizers = ["sgdm"]
epochs = 15
seeds = [0, 1, 2]
subset = 10000
"""


@pytest.fixture(scope="session")
def collapsing(tmp_path_factory):
    """A real sweep (kbn's own front end, its chosen local workers) whose runs collapse."""
    if not os.path.isdir(FASHION_DIR):
        pytest.skip("apt-get install dataset-fashion-mnist")
    root = tmp_path_factory.mktemp("collapsing")
    (root / "collapsing.toml").write_text(COLLAPSING)
    env = {**os.environ, "KBN_DATA_DIR": str(root / "cache")}
    p = subprocess.run([sys.executable, "-m", "kbn", "sweep", str(root / "collapsing.toml"), "--logdir",
                        str(root / "out")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root / "out", p.stdout + p.stderr


@pytest.fixture(scope="session")
def collapsing_runs(collapsing):
    """(norm, seed) -> (result.json, metrics.csv rows) of the collapsing sweep's final runs."""
    out = collapsing[0]
    from kbn.runs.runlog import read_metrics

    runs = {}
    for f in sorted((out / "runs").glob("*/result.json")):
        cfg = json.loads((f.parent / "config.json").read_text())["settings"]
        runs[(cfg["norm"], cfg["seed"])] = (json.loads(f.read_text()), read_metrics(f.parent))
    return runs
