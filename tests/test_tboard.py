"""kbn.tboard: what TensorBoard shows of a sweep, asked through its own HTTP API: one HParams row per
training, no empty runs; `kbn tensorboard` serves the final runs or all."""

import contextlib
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
    assert sorted(names) == run_folders(sweep_dir)  # one run per training; before: 56, 14 without scalars
    assert set(tags) == set(names)  # no run without scalars
    for by_tag in tags.values():  # the tag says what the step counts
        assert {"train/epoch_accuracy", "validation/epoch_accuracy", "test/epoch_accuracy"} <= set(by_tag)


@pytest.mark.parametrize("extra,count", [([], 4), (["--all"], 14)])
@pytest.mark.slow
def test_kbn_tensorboard_serves_the_final_runs_or_all(sweep_dir, tmp_path, extra, count):
    port = _free_port()
    cmd = [sys.executable, "-m", "kbn", "tensorboard", str(sweep_dir), "--port", str(port), *extra]
    with serving(cmd, port, tmp_path / "kbn.log") as (url, runs):
        names = runs()
        tags = _get(f"{url}/data/plugin/scalars/tags")
    assert len(names) == count and set(tags) == set(names)
    assert all(n.startswith(("runs/", "search/")) for n in names) == bool(extra)
    assert f"http://127.0.0.1:{port}/" in (tmp_path / "kbn.log").read_text()
    for by_tag in tags.values():
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
