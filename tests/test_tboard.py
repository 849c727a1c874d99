"""kbn.runs.tboard: what TensorBoard shows of a sweep, asked through its own HTTP API: one HParams row per
training, no empty runs; `kbn tensorboard` serves the final runs or all."""

import contextlib
import re
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]

ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
SERVER_START = 90  # seconds: TensorBoard imports TensorFlow when it is installed (slow on 2 busy cores)


@pytest.fixture
def sweep_dir(finished_tiny_sweep):
    return finished_tiny_sweep


def run_folders(sweep: Path) -> list[str]:
    return sorted(p.parent.relative_to(sweep).as_posix() for p in sweep.rglob("result.json"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _settled(fetch, deadline, polls=3):
    """The answer once it stops changing (TensorBoard loads event files in the background)."""
    last, same = None, 0
    while time.monotonic() < deadline:
        try:
            now = fetch()
        except OSError:
            now = None
        same = same + 1 if now and now == last else 0
        if same >= polls - 1:
            return now
        last = now
        time.sleep(1)
    pytest.fail(f"TensorBoard gave no settled answer in time (last: {str(last)[:300]})")


@contextlib.contextmanager
def serving(cmd, port, log: Path):
    """A TensorBoard server started by `cmd`; waited for (bounded) and always killed."""
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            if p.poll() is not None:
                pytest.fail(f"TensorBoard exited ({p.returncode}): {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"TensorBoard did not answer in {SERVER_START} s: {log.read_text()[-2000:]}")
            try:
                _get(f"{url}/data/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield url, lambda: _settled(lambda: _get(f"{url}/data/runs"), time.monotonic() + 60)
    finally:
        p.kill()
        p.wait(timeout=30)


def tensorboard(logdir, tmp_path):
    port = _free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
           "--port", str(port)]
    return serving(cmd, port, tmp_path / "tensorboard.log")


def session_groups(url):
    body = {"experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [], "startIndex": 0,
            "sliceSize": 10000}
    return _get(f"{url}/data/plugin/hparams/session_groups", body)


@pytest.mark.slow
def test_hparams_show_one_row_per_training(sweep_dir, tmp_path):
    with tensorboard(sweep_dir, tmp_path) as (url, runs):
        runs()
        groups = _settled(lambda: session_groups(url), time.monotonic() + 60)
        experiment = _get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
    folders = run_folders(sweep_dir)
    assert len(folders) == 14
    assert groups["totalSize"] == len(folders)  # before: 12 (a final run and a trial shared a name)
    assert sorted(g["name"] for g in groups["sessionGroups"]) == folders
    for g in groups["sessionGroups"]:
        config = json.loads((sweep_dir / g["name"] / "config.json").read_text())["settings"]
        seed = g["hparams"]["seed"]
        # HParams has no integer type: a number comes back as 0.0 and the dashboard prints 0.0000
        assert seed == str(config["seed"])
        assert g["hparams"]["phase"] == ("final" if g["name"].startswith("runs/") else g["name"].split("/")[1])
        assert g["hparams"]["lr"] == pytest.approx(config["lr"])
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"] if m["name"].get("group", "") == ""}
    assert "test/epoch_accuracy" in metrics
    for g in groups["sessionGroups"]:
        if g["name"].startswith("runs/"):
            values = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
            result = json.loads((sweep_dir / g["name"] / "result.json").read_text())["metrics"]
            assert values["test/epoch_accuracy"] == pytest.approx(result["test_accuracy"])
    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    lrs = infos["lr"]["domainDiscrete"]
    assert {0.01, 0.1, 1.0} <= set(lrs)  # the coarse grid, as discrete values
    used = {json.loads((sweep_dir / f / "config.json").read_text())["settings"]["lr"] for f in folders}
    assert used <= set(lrs)  # every fine value too
    assert sorted(infos["phase"]["domainDiscrete"]) == ["coarse", "final", "fine"]


@pytest.mark.slow
def test_every_run_is_a_training_with_scalars(sweep_dir, tmp_path):
    with tensorboard(sweep_dir, tmp_path) as (url, runs):
        names = runs()
        tags = _get(f"{url}/data/plugin/scalars/tags")
    # one run per training, and the sweep's summary run; before: 56, 14 without scalars
    assert sorted(names) == sorted(run_folders(sweep_dir) + ["summary/batch", "summary/none"])
    assert set(tags) == set(names)  # no run without scalars
    for by_tag in (v for name, v in tags.items() if not name.startswith("summary/")):  # the tag says what the step counts
        assert {"train/epoch_accuracy", "validation/epoch_accuracy", "test/epoch_accuracy"} <= set(by_tag)


@pytest.mark.parametrize("extra,count", [([], 6), (["--all"], 16)])
@pytest.mark.slow
def test_kbn_tensorboard_serves_the_final_runs_or_all(sweep_dir, tmp_path, extra, count):
    port = _free_port()
    cmd = [sys.executable, "-m", "kbn", "tensorboard", str(sweep_dir), "--port", str(port), *extra]
    with serving(cmd, port, tmp_path / "kbn.log") as (url, runs):
        names = runs()
        tags = _get(f"{url}/data/plugin/scalars/tags")
    assert len(names) == count and set(tags) == set(names)  # the trainings and the summary run
    # named by their path under the sweep folder either way, as their HParams sessions are
    assert {n.split("/")[0] for n in names} == ({"runs", "search", "summary"} if extra else {"runs", "summary"})
    assert f"http://127.0.0.1:{port}/" in (tmp_path / "kbn.log").read_text()
    for by_tag in (v for name, v in tags.items() if not name.startswith("summary/")):
        assert all("step counts epochs" in t["description"] for t in by_tag.values()), by_tag


def test_kbn_tensorboard_refuses_a_folder_that_is_not_there(tmp_path, capsys):
    from kbn.cli import main

    assert main(["tensorboard", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


@pytest.mark.slow
def test_tensorboard_shows_how_each_run_ended(collapsing, collapsing_runs, tmp_path):
    """Through TensorBoard's own HParams API: a run that did not train ends its session with
    STATUS_FAILURE and carries outcome/unstable = 1."""
    out, _ = collapsing
    runs = collapsing_runs
    with tensorboard(out / "runs", tmp_path) as (url, wait):
        wait()
        groups = _settled(lambda: session_groups(url), time.monotonic() + 60)
    assert groups["totalSize"] == 6
    for g in groups["sessionGroups"]:
        (session,) = g["sessions"]
        norm, seed = g["hparams"]["norm"], int(g["hparams"]["seed"])
        kind = runs[(norm, seed)][0]["outcome"]["kind"]
        values = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert values["outcome/unstable"] == float(kind != "trained")
        assert session["status"] == ("STATUS_SUCCESS" if kind == "trained" else "STATUS_FAILURE")


# ---------------------------------------------------------------- the summary run: Custom Scalars, answers

def banded_text() -> str:
    """conftest's TINY sweep with 3 seeds, 3 epochs, pre-activation probes and a 2-rate search."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TINY

    text = TINY.replace("epochs = 1", "epochs = 3\nprobe_preactivations = 16").replace("seeds = [0, 1]", "seeds = [0, 1, 2]")
    return text.replace("coarse = [0.01, 0.1, 1.0]", "coarse = [0.1, 1.0]\nepochs = 1").replace("fine_per_side = 1",
                                                                                          "fine_per_side = 0")


@pytest.fixture(scope="module")
def banded(tmp_path_factory):
    """A real sweep of 3 seeds and 3 epochs (bands over seeds, curves of 3 points), run, then resumed
    once (nothing left to train: the summary is written again)."""

    from conftest import write_cache
    from kbn.core.config import load_sweep
    from kbn.sweep.runner import run_sweep

    root = tmp_path_factory.mktemp("banded")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KBN_DATA_DIR", str(root / "cache"))
        write_cache()
        (root / "banded.toml").write_text(banded_text())
        for _ in range(2):
            assert run_sweep(load_sweep(root / "banded.toml"), root / "out", log=lambda *_: None) == 0
    return root / "out"


def expected_bands(sweep: Path, metric: str) -> dict:
    """norm -> epoch -> (mean, lower, upper) from the final runs' metrics.csv: a Student-t 95% interval."""
    import numpy as np
    from scipy import stats

    from kbn.runs.runlog import read_metrics

    by = {}
    for cfg in sorted(sweep.glob("runs/*/config.json")):
        s = json.loads(cfg.read_text())["settings"]
        for row in read_metrics(cfg.parent):
            by.setdefault(s["norm"], {}).setdefault(int(row["epoch"]), []).append(row[metric])
    out = {}
    for norm, epochs in by.items():
        for e, v in epochs.items():
            v = np.array(v)
            half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
            lo, hi = v.mean() - half, v.mean() + half
            if metric.endswith("accuracy"):
                lo, hi = max(lo, 0.0), min(hi, 1.0)
            lo = max(lo, 0.0)  # a loss cannot go below 0 either
            out.setdefault(norm, {})[e] = (v.mean(), lo, hi)
    return out


def kbn_tensorboard(sweep, tmp_path, *extra):
    port = _free_port()
    cmd = [sys.executable, "-m", "kbn", "tensorboard", str(sweep), "--port", str(port), *extra]
    return serving(cmd, port, tmp_path / "kbn.log")


@pytest.mark.slow
def test_custom_scalars_layout_draws_each_cells_norms_with_their_seed_bands(banded, tmp_path):
    """Through the Custom Scalars plugin's own routes: a margin chart per validation curve whose lines
    are the norms (a run each: TensorBoard colours by run), and the points of mean/lower/upper are the
    seeds' mean and t-interval, once each although the sweep was resumed; a pre-activation chart per norm."""
    runs_of = {n: f"summary/{n}" for n in ("none", "batch")}
    with kbn_tensorboard(banded, tmp_path) as (url, runs):
        names = runs()
        layout = _get(f"{url}/data/plugin/custom_scalars/layout")
        served = {(n, m): _get(f"{url}/data/plugin/custom_scalars/scalars?run={run}&tag=%5Ecell/mnist-mlp-sgd/{m}/")
                  ["tag_to_events"] for n, run in runs_of.items() for m in ("val_accuracy", "val_loss")}
        pre = {n: _get(f"{url}/data/plugin/custom_scalars/scalars?run={run}&tag=%5Ecell/mnist-mlp-sgd/preactivation/")
               ["tag_to_events"] for n, run in runs_of.items()}
    assert set(runs_of.values()) <= set(names)
    curves, percentiles = layout["category"]
    assert curves["title"] == "mnist-mlp-sgd: none vs batch" and percentiles["title"].startswith("mnist-mlp-sgd")
    margins = {c["title"].split(":")[0]: c for c in curves["chart"]}
    assert set(margins) == {"validation accuracy", "validation loss"}
    for label, metric in (("validation accuracy", "val_accuracy"), ("validation loss", "val_loss")):
        chart = margins[label]
        assert "95%" in chart["title"] and "n = 3" in chart["title"]  # how the band was made
        (series,) = chart["margin"]["series"]
        assert series["value"] == f"cell/mnist-mlp-sgd/{metric}/mean"
        want = expected_bands(banded, metric)
        for norm in runs_of:
            got = {k: served[(norm, metric)][series[k]] for k in ("value", "lower", "upper")}
            for k, points in got.items():
                assert [p[1] for p in points] == [1, 2, 3], (k, points)  # one point per epoch: no duplicate
            for i, e in enumerate((1, 2, 3)):
                mean, lo, hi = want[norm][e]
                assert got["value"][i][2] == pytest.approx(mean, abs=1e-6)
                assert got["lower"][i][2] == pytest.approx(lo, abs=1e-6)
                assert got["upper"][i][2] == pytest.approx(hi, abs=1e-6)
            assert any(got["lower"][i][2] < got["upper"][i][2] for i in range(3))  # a band, not a line
    lines = percentiles["chart"]
    assert [c["title"].split(":")[0] for c in lines] == ["none", "batch"]  # one pre-activation chart per norm
    for c, norm in zip(lines, runs_of):
        (regex,) = c["multiline"]["tag"]
        assert sorted(t[-3:] for t in pre[norm] if re.match(regex, t)) == ["p15", "p50", "p85"]
        other = "batch" if norm == "none" else "none"
        assert not any(re.match(regex, t) for t in pre[other])  # a norm's chart draws its own run alone


def expected_answers(sweep: Path) -> dict:
    """run path -> the answer columns, from metrics.csv and result.json: the test accuracy's paired
    difference from the none run of the seed (points), the mean validation accuracy (%), and the first
    epoch at 90% of the way from chance (0.1) to that none run's best validation accuracy."""
    from kbn.runs.runlog import read_metrics

    runs = {}
    for cfg in sorted(sweep.glob("runs/*/config.json")):
        s = json.loads(cfg.read_text())["settings"]
        runs[(s["norm"], s["seed"])] = (cfg.parent, read_metrics(cfg.parent),
                                        json.loads((cfg.parent / "result.json").read_text())["metrics"])
    out = {}
    for (norm, seed), (folder, rows, result) in runs.items():
        _, none_rows, none_result = runs[("none", seed)]
        target = 0.1 + 0.9 * (max(r["val_accuracy"] for r in none_rows) - 0.1)
        reached = [r["epoch"] for r in rows if r["val_accuracy"] >= target - 1e-9]
        out[folder.relative_to(sweep).as_posix()] = {
            "answer/test_diff_vs_none": 100 * (result["test_accuracy"] - none_result["test_accuracy"]),
            "answer/val_auc": 100 * sum(r["val_accuracy"] for r in rows) / len(rows),
            **({"answer/epochs_to_target": reached[0]} if reached else {})}
    return out


@pytest.mark.slow
def test_hparams_carry_the_answer_under_the_runs_own_names(banded, tmp_path):
    """`kbn tensorboard`'s HParams rows are named as its Scalars runs; the answer columns come first,
    with the numbers the run folders give; the lr filter lists the rates trained; the five hparams
    the dashboard shows by default include seed and phase."""
    with kbn_tensorboard(banded, tmp_path) as (url, runs):
        names = runs()
        groups = _settled(lambda: session_groups(url), time.monotonic() + 60)
        experiment = _get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
    rows = {g["name"]: {m["name"]["tag"]: m["value"] for m in g["metricValues"]} for g in groups["sessionGroups"]}
    assert sorted(rows) == sorted(n for n in names if n.startswith("runs/"))  # one name in Scalars and HParams
    want = expected_answers(banded)
    assert sorted(want) == sorted(rows)
    for name, values in want.items():
        got = {t: v for t, v in rows[name].items() if t.startswith("answer/")}
        assert got == pytest.approx(values), name
    tags = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert tags[:3] == ["answer/test_diff_vs_none", "answer/val_auc", "answer/epochs_to_target"]
    infos = experiment["hparamInfos"]  # in the order the dashboard takes its first five from
    assert {"seed", "phase", "norm", "lr"} <= {h["name"] for h in infos[:5]} and all(h.get("differs") for h in infos[:5])
    trained = {json.loads(f.read_text())["settings"]["lr"] for f in banded.glob("*/**/config.json")}
    (lr,) = [h for h in infos if h["name"] == "lr"]
    assert sorted(lr["domainDiscrete"]) == sorted(trained)  # the rates trained, not the whole possible grid


@pytest.mark.slow
def test_kbn_tensorboard_speaks_first_and_says_which_page_shows_what(banded, tmp_path):
    """Its first lines are kbn's (no absl, oneDNN or CUDA lines before the URL), the URL opens on the
    Custom Scalars layout (the first plugin TensorBoard lists), and each page's URL is said."""
    with kbn_tensorboard(banded, tmp_path) as (url, runs):
        runs()
        plugins = _get(f"{url}/data/plugins_listing")
        text = (tmp_path / "kbn.log").read_text()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if f"{url}/" in line)
    assert all(line.startswith("kbn:") for line in lines[:first + 4]), lines[:first + 4]
    for page in ("#custom_scalars", "#hparams"):
        assert f"{url}/{page}" in text
    assert next(iter(plugins)) == "custom_scalars" and plugins["custom_scalars"]["enabled"]


@pytest.mark.slow
def test_a_rate_list_gives_each_rate_its_own_bands_and_pairs(tmp_path, tiny_text, write_cache):
    """lr = [0.1, 1.0] trains every arm at both rates: each rate is its own section of the layout,
    and a run's difference is against the none run of its own seed and rate (read with
    TensorBoard's own event loader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kbn.core.config import load_sweep
    from kbn.sweep.runner import run_sweep

    write_cache()
    (tmp_path / "rl.toml").write_text(tiny_text.split("[search]")[0].replace("epochs = 1", "epochs = 1\nlr = [0.1, 1.0]"))
    assert run_sweep(load_sweep(tmp_path / "rl.toml"), tmp_path / "out", log=lambda *_: None) == 0
    summary = EventAccumulator(str(tmp_path / "out" / "summary" / "none"))
    summary.Reload()
    assert {t.split("/")[1] for t in summary.Tags()["scalars"]} == {"mnist-mlp-sgd-lr0.1", "mnist-mlp-sgd-lr1"}
    test_acc = {}
    for f in (tmp_path / "out" / "runs").glob("*/result.json"):
        s = json.loads((f.parent / "config.json").read_text())["settings"]
        test_acc[(s["norm"], s["lr"], s["seed"])] = (f.parent, json.loads(f.read_text())["metrics"]["test_accuracy"])
    assert len(test_acc) == 8
    for (norm, lr, seed), (folder, acc) in test_acc.items():
        run = EventAccumulator(str(folder))
        run.Reload()
        (point,) = run.Scalars("answer/test_diff_vs_none")
        assert point.value == pytest.approx(100 * (acc - test_acc[("none", lr, seed)][1]), abs=1e-4)


def test_summary_writers_take_turns(tmp_path):
    """A chief's progress thread and the end of its sweep both write the summary run: the second
    waits for the first (they shared a temporary folder: FileNotFoundError on the rename)."""
    import fcntl
    import threading

    from kbn.sweep import summary

    done = []
    with open(tmp_path / ".summary.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        writer = threading.Thread(target=lambda: done.append(summary.write(tmp_path)))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and done == []  # waiting for the lock
    writer.join(10)
    assert done == [None]  # then written (nothing to summarise in an empty folder)


@pytest.mark.slow
def test_a_summary_with_nothing_to_draw_yet_is_no_error(finished_tiny_sweep, tmp_path):
    """A sweep's first final run ends before its cell has a second arm to compare: the summary has no
    point to draw yet. Nothing is written and nothing is said (it used to raise FileNotFoundError on
    the temporary folder it never made, printed as a "not written" note in `make demo`); the next
    write, with both arms, makes it."""
    import shutil

    from kbn.sweep import summary

    folder = tmp_path / "sweep"
    shutil.copytree(finished_tiny_sweep, folder)
    shutil.rmtree(folder / "summary", ignore_errors=True)
    runs = sorted((folder / "runs").iterdir())
    kept = runs[0]
    for run in runs[1:]:
        shutil.move(run, tmp_path / run.name)
    assert summary.write(folder) is None and not (folder / "summary").exists()
    assert not (folder / ".summary-tmp").exists()
    for run in runs[1:]:
        shutil.move(tmp_path / run.name, folder / "runs" / run.name)
    assert summary.write(folder) == folder / "summary" and kept.exists()
