"""kbn.training.handoff: a conv net met by a JAX process on a CPU trains in a TensorFlow child, which says so;
its lines come back through kbn's log, its errors are raised here, and an interrupt stops both."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kbn.core.config import TrainConfig
from kbn.core.errors import ConfigError
from kbn.training.train import train

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each starts a TensorFlow process


@pytest.fixture
def handoff_on(monkeypatch):
    monkeypatch.setenv("KBN_HANDOFF", "on")


def test_a_conv_net_in_a_jax_process_trains_on_tensorflow_and_says_so(handoff_on, tiny_dataset, tmp_path, capfd,
                                                                    monkeypatch):
    import re

    import keras

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # the child's C++ start-up lines, were they printed

    assert keras.backend.backend() == "jax"
    said = []
    cfg = TrainConfig(arch="tests.user_parts:small_cnn", norm="batch", optimizer="sgdm", lr=0.05, epochs=2,
                      batch_size=32)
    r = train(cfg, tmp_path, dataset=tiny_dataset, log=said.append)
    config = json.loads((r.folder / "config.json").read_text())
    path = config["path"]
    assert config["backend"] == "tensorflow" and path["handed_from"] == "jax"
    assert path["fused_batch_norm"] == ["c1_batchnorm", "hidden_batchnorm"]
    assert "handed over by a JAX process" in path["reason"] and "KBN_HANDOFF=off" in path["reason"]
    # the data this process held, not a reload
    assert config["data"]["source"] == "generated" and config["data"]["sizes"]["train"] == 512
    # its lines came through `log`, the path's first
    assert said[0].startswith(f"kbn: {cfg.run_name()}: tensorflow, fit loop") and "handed over" in said[0]
    assert any("epoch 2/2" in line for line in said)
    err = capfd.readouterr().err  # the child's stderr, copied here: no TensorFlow start-up lines
    assert not re.search(r"^[IWEF]\d{4} |absl::InitializeLog", err, re.M), err[-2000:]
    result = json.loads((r.folder / "result.json").read_text())
    assert r.status == "finished" and r.metrics == result["metrics"] and r.metrics["val_accuracy"] > 0.3
    assert r.outcome.kind == result["outcome"]["kind"]
    # done is done: asked again, the finished run is found here, in this process, not handed over
    again = train(cfg, tmp_path, dataset=tiny_dataset, log=said.append)
    assert again.skipped and again.metrics == r.metrics


def test_a_dense_net_or_handoff_off_stays_in_this_process(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("KBN_HANDOFF", "off")
    r = train(TrainConfig(arch="tests.user_parts:small_cnn", epochs=1, batch_size=64), tmp_path, verbose=False,
              dataset=tiny_dataset)
    path = json.loads((r.folder / "config.json").read_text())["path"]
    assert path["backend"] == "jax" and "handed_from" not in path and "KBN_HANDOFF=off keeps it" in path["reason"]
    monkeypatch.setenv("KBN_HANDOFF", "on")
    r = train(TrainConfig(arch="mlp", epochs=1, batch_size=64), tmp_path, verbose=False, dataset=tiny_dataset)
    assert json.loads((r.folder / "config.json").read_text())["path"]["loop"] == "kbn"


def test_the_childs_error_is_raised_here_as_it_was_there(handoff_on, tiny_dataset, tmp_path):
    cfg = TrainConfig(arch="cnn", epochs=1, probe_preactivations=5000)  # more than the 128 validation images
    with pytest.raises(ConfigError) as e:
        train(cfg, tmp_path, verbose=False, dataset=tiny_dataset)
    assert str(e.value).startswith("probe_preactivations: 5000 is more than the 128 validation images")
    assert not any(tmp_path.rglob("result.json"))


NOTEBOOK = """
import sys; sys.path.insert(0, 'tests'); import conftest
from kbn.core.config import TrainConfig; from kbn.training.train import train
ds = conftest.generated_dataset(sizes=(4096, 128, 128))
print("started", flush=True)
train(TrainConfig(arch="cnn", norm="batch", epochs=40, batch_size=32), sys.argv[1], dataset=ds)
"""


def test_an_interrupt_of_this_process_stops_the_child_and_leaves_the_run_to_redo(tmp_path):
    """A notebook's interrupt reaches the kernel alone (not the child): it is passed on, the child stops
    between steps, no result is sealed, and no TensorFlow process is left behind."""
    env = dict(os.environ, KBN_HANDOFF="on", KERAS_BACKEND="jax")
    proc = subprocess.Popen([sys.executable, "-c", NOTEBOOK, str(tmp_path)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    for line in proc.stdout:  # wait until the child trains
        lines.append(line)
        if "epoch 1/40" in line:
            break
    else:
        pytest.fail("".join(lines[-20:]))
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1
    os.kill(proc.pid, signal.SIGINT)  # this process only, as a notebook's interrupt
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and "KeyboardInterrupt" in rest, rest[-2000:]
    time.sleep(0.5)
    assert not Path(f"/proc/{children[0]}").exists()  # the child ended too
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1 and (runs[0] / "config.json").exists() and not (runs[0] / "result.json").exists()
    assert "epoch 40/40" not in rest
