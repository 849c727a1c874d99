"""kbn.runs.runlog: a run's files (config.json, metrics.csv, result.json), strict JSON, and the check that
a finished run is whole."""

import json
import math

import pytest

from kbn.core.errors import ConfigError
from kbn.runs.runlog import RunLog, check_run, check_writable_dir, write_json_atomic


def test_a_whole_run_is_finished(tmp_path, write_finished_run):
    log = write_finished_run(tmp_path / "r")
    assert log.finished()["metrics"]["val_accuracy"] == pytest.approx(0.53)
    assert not check_run(tmp_path / "r").damaged
    assert check_run(tmp_path / "absent").result is None and not check_run(tmp_path / "absent").damaged


def test_a_diverged_run_writes_strict_json(tmp_path, write_finished_run):
    write_finished_run(tmp_path / "r", status="diverged")
    text = (tmp_path / "r" / "result.json").read_text()
    assert "NaN" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert check_run(tmp_path / "r").result["status"] == "diverged"


def test_json_writer_turns_non_finite_numbers_into_null(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": math.inf, "b": [float("nan"), 1.0]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.0]}


@pytest.mark.parametrize("damage,expect", [
    (lambda f: (f / "metrics.csv").unlink(), "metrics.csv is missing"),
    (lambda f: (f / "result.json").write_text("{garbage"), "result.json is unreadable"),
    (lambda f: (f / "result.json").write_text("[]"), "result.json is unreadable"),
    (lambda f: (f / "config.json").write_text(""), "config.json is unreadable"),
    (lambda f: (f / "metrics.csv").write_text((f / "metrics.csv").read_text()[:-40]), "metrics.csv"),
    (lambda f: (f / "metrics.csv").write_text("\n".join((f / "metrics.csv").read_text().splitlines()[:-1]) + "\n"),
     "2 complete row(s) of 3"),
])
def test_damaged_runs_are_not_finished_and_say_why(tmp_path, damage, expect, write_finished_run):
    write_finished_run(tmp_path / "r")
    damage(tmp_path / "r")
    check = check_run(tmp_path / "r")
    assert check.damaged and expect in check.problem and check.result is None
    assert RunLog(tmp_path / "r").finished() is None  # so it is redone, never reused


def test_writable_dir_fails_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="logdir: .* is a file"):
        check_writable_dir("logdir", tmp_path / "file")
    with pytest.raises(ConfigError, match="logdir: cannot write into '/proc/kbn'"):
        check_writable_dir("logdir", "/proc/kbn")
    assert check_writable_dir("logdir", tmp_path / "a" / "b").is_dir()
