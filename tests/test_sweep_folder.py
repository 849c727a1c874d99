"""kbn.sweep.folder: the live sweep's lock, sweep.json (a resumed sweep must match it; readers load
it back) and the check of the runs on disk against a sweep."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kbn.core.config import load_sweep, sweep_from_dict
from kbn.core.errors import ConfigError
from kbn.report.results import read_protocol
from kbn.sweep.folder import SweepBusy, is_locked, load_folder_sweep, prepare_folder, stored_sweep, sweep_lock
from kbn.sweep.runner import run_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEP = {"name": "s", "datasets": ["mnist"], "archs": ["mlp"], "norms": ["none", "batch"], "optimizers": ["sgd", "adam"],
         "epochs": 3, "seeds": [0, 1],
         "search": {"coarse": [0.01, 0.1, 1.0], "coarse_by_optimizer": {"adam": [0.001, 0.01]}, "epochs": 1}}
# sweep.json as kbn wrote it before it kept the sweep file's shape (and before lr, init, eval_steps and
# probe_preactivations existed), as /work/runs/answer-mlp has it: flattened, every field by its name.
OLD_SWEEP_JSON = {
    "archs": ["mlp"], "batch_size": 128, "coarse": [0.01, 0.1, 1.0], "coarse_by_optimizer": {"adam": [0.001, 0.01]},
    "datasets": ["mnist"], "epochs": 3, "eval_every_steps": None, "fine_per_side": 2, "name": "s",
    "norms": ["none", "batch"], "optimizers": ["sgd", "adam"], "search_epochs": 1, "search_seeds": [2],
    "search_total_steps": None, "seeds": [0, 1], "select_on": "validation", "subset": None,
    "test_every_epoch": True, "total_steps": None,
}

HOLD = """
import sys, time
from pathlib import Path
from kbn.sweep.folder import sweep_lock
with sweep_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_lock_refuses_a_second_holder_until_the_first_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert is_locked(tmp_path)
        with pytest.raises(SweepBusy, match=rf"in use by a live kbn sweep \(pid {holder.pid} on "):
            with sweep_lock(tmp_path):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # the kernel lets go of the lock even then
        holder.wait()
    assert not is_locked(tmp_path)
    with sweep_lock(tmp_path):
        assert is_locked(tmp_path)  # asked from another open file: the holder is this process
        assert f"pid {os.getpid()} on " in (tmp_path / ".lock").read_text()


def test_sweep_json_keeps_the_sweep_files_shape(tmp_path):
    sweep = sweep_from_dict(SWEEP)
    prepare_folder(sweep, tmp_path)
    stored = json.loads((tmp_path / "sweep.json").read_text())
    assert stored["search"] == {"coarse": [0.01, 0.1, 1.0], "coarse_by_optimizer": {"adam": [0.001, 0.01]},
                                "fine_per_side": 2, "epochs": 1, "seeds": [2], "selection": "stable"}
    assert not {"coarse", "search_seeds", "search_epochs", "subset"} & set(stored)  # nested; unset left out
    assert sweep_from_dict(stored) == sweep == load_folder_sweep(tmp_path)


def test_a_fixed_rate_sweep_is_stored_without_a_search(tmp_path):
    raw = {k: v for k, v in SWEEP.items() if k != "search"} | {"lr": 0.1}
    prepare_folder(sweep_from_dict(raw), tmp_path)
    stored = json.loads((tmp_path / "sweep.json").read_text())
    assert "search" not in stored and stored["lr"] == 0.1
    assert load_folder_sweep(tmp_path) == sweep_from_dict(raw)


@pytest.mark.parametrize("change,field", [({"epochs": 4}, "epochs"), ({"seeds": [0, 1, 3]}, "search_seeds, seeds"),
                                          ({"search": {**SWEEP["search"], "epochs": 2}}, "search_epochs")])
@pytest.mark.parametrize("shape", ["file", "old"])
def test_a_changed_sweep_is_refused_and_the_same_one_resumes(tmp_path, change, field, shape):
    same = SWEEP
    if shape == "old":
        (tmp_path / "sweep.json").write_text(json.dumps(OLD_SWEEP_JSON))
        # made before search.selection: its rates were the best scores, which its file must now say
        same = {**SWEEP, "search": {**SWEEP["search"], "selection": "best"}}
    else:
        prepare_folder(sweep_from_dict(SWEEP), tmp_path)
    before = (tmp_path / "sweep.json").read_text()
    prepare_folder(sweep_from_dict(same), tmp_path)  # the same sweep: accepted
    if "search" in change:
        change = {"search": {**change["search"], "selection": same["search"].get("selection", "stable")}}
    with pytest.raises(ConfigError, match=rf"holds a sweep with other settings \({field} differ\)"):
        prepare_folder(sweep_from_dict({**same, **change}), tmp_path)
    assert (tmp_path / "sweep.json").read_text() == before  # neither rewrites it


def test_an_old_flattened_sweep_json_reads_as_its_sweep(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "sweep.json").write_text(json.dumps(OLD_SWEEP_JSON))
    prepare_folder(sweep_from_dict(SWEEP), new)
    assert load_folder_sweep(new) == sweep_from_dict(SWEEP)
    # made before search.selection existed: its rates were chosen as the best scores
    assert load_folder_sweep(old) == dataclasses.replace(sweep_from_dict(SWEEP), selection="best")
    assert {**stored_sweep(old)["search"], "selection": "stable"} == stored_sweep(new)["search"]  # the file's shape
    assert "init" not in stored_sweep(old)  # as written: fields added since take their defaults on load
    protocol = read_protocol(old, [], [])
    assert protocol == {**read_protocol(new, [], []), "selection": "best"} and protocol["search"] == ["1 epochs"]
    assert protocol["search_seeds"] == [2] and protocol["select_on"] == "validation"


@pytest.mark.parametrize("content,expect", [("", "is unreadable"), ("[1, 2]", "holds list, not a sweep"),
                                            (json.dumps({**OLD_SWEEP_JSON, "epochs": 0}), "epochs: got 0")])
def test_a_damaged_sweep_json_is_one_line_saying_what_to_do(tmp_path, content, expect):
    (tmp_path / "sweep.json").write_text(content)
    with pytest.raises(ConfigError, match=expect) as e:
        prepare_folder(sweep_from_dict(SWEEP), tmp_path)
    assert "\n" not in str(e.value) and str(e.value).count("restore it, or delete it") == 1


def test_a_live_sweep_locks_its_folder(tiny, tmp_path):
    with sweep_lock(tmp_path / "out"):
        with pytest.raises(SweepBusy, match="in use by a live kbn sweep"):
            run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)
    assert not (tmp_path / "out" / "tuner").exists()


@pytest.mark.slow
def test_resuming_with_another_sweep_file_is_refused(tiny, tmp_path, tiny_text):
    run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)
    tiny.write_text(tiny_text.replace("epochs = 1", "epochs = 2"))
    with pytest.raises(ConfigError, match="epochs"):
        run_sweep(load_sweep(tiny), tmp_path / "out", log=lambda *_: None)


@pytest.mark.slow
def test_a_deleted_sweep_json_is_rebuilt_only_for_the_same_sweep(tiny, tmp_path, tiny_text):
    out = tmp_path / "out"
    run_sweep(load_sweep(tiny), out, log=lambda *_: None)
    (out / "sweep.json").unlink()
    changed = tmp_path / "changed.toml"
    changed.write_text(tiny_text.replace("epochs = 1", "epochs = 2"))
    with pytest.raises(ConfigError, match="no sweep.json and its runs were made by another sweep .*epochs 1 vs 2"):
        run_sweep(load_sweep(changed), out, log=lambda *_: None)
    changed.write_text(tiny_text.replace("coarse = [0.01, 0.1, 1.0]", "coarse = [0.001, 0.1, 1.0]"))
    with pytest.raises(ConfigError, match=r"made by another sweep .*coarse \[0.01, 0.1, 1.0\] vs \[0.001, 0.1, 1.0\]"):
        run_sweep(load_sweep(changed), out, log=lambda *_: None)
    assert not (out / "sweep.json").exists()
    assert run_sweep(load_sweep(tiny), out, log=lambda *_: None) == 0  # the same sweep: accepted
    assert (out / "sweep.json").exists()
