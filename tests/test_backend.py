"""kbn.training.backend: every backend decision, asked for when needed (nothing runs at import): the Keras
backend per network and machine, JAX's compile cache, fast compilation, the default pack, and no
TensorFlow in a JAX process."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kbn.training import backend

ROOT = Path(__file__).resolve().parents[1]


SLOW = pytest.mark.slow  # builds the networks in a child process: seconds each


@pytest.fixture
def machine(monkeypatch):
    """`machine(jax=True, tf=True, gpu=False)`: what choose_backend finds installed, for one test."""
    def set_machine(jax=True, tf=True, gpu=False):
        have = {"jax": jax, "tensorflow": tf}
        real = importlib.util.find_spec
        monkeypatch.delenv("KERAS_BACKEND", raising=False)
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: object() if have.get(name) else None if name in have else real(name, *a))
        monkeypatch.setattr(shutil, "which", lambda cmd: "/usr/bin/nvidia-smi" if gpu and cmd == "nvidia-smi" else None)

    return set_machine


@pytest.mark.parametrize("archs,have,expect", [
    pytest.param(["mlp"], {}, "jax", marks=SLOW),  # dense networks: JAX, 2-4x faster on CPU
    pytest.param(["mlp", "cnn"], {}, "tensorflow", marks=SLOW),  # a CNN on CPU: TensorFlow's oneDNN
    (["deep_cnn"], {"gpu": True}, "jax"),  # on a GPU: JAX for every network
    (["cnn"], {"tf": False}, "jax"),
    (["mlp"], {"jax": False}, "tensorflow"),
    pytest.param(["tests.user_parts:two_layer"], {}, "jax", marks=SLOW),  # a user's dense network
    pytest.param(["tests.user_parts:small_cnn"], {}, "tensorflow", marks=SLOW),  # a user's conv net: read from its built model
    pytest.param(["my_module:MyNet"], {}, "jax", marks=SLOW),  # does not build: the command reports it
])
def test_choose_backend_by_networks_and_machine(machine, archs, have, expect):
    machine(**have)
    assert backend.choose_backend(archs) == expect


def test_keras_backend_set_by_the_user_always_wins(machine, monkeypatch):
    machine()
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert backend.choose_backend(["cnn"]) == "torch"


def test_is_conv_reads_the_registry():
    assert backend.is_conv("cnn") and backend.is_conv("deep_cnn")
    assert not backend.is_conv("mlp") and not backend.is_conv("ioffe_mlp") and not backend.is_conv("no-such-net")


@pytest.mark.slow
def test_probe_reads_convolutions_from_the_built_models():
    """In a child process on JAX (the backend is chosen before Keras is imported): each network built,
    its Conv layers listed; a user's import string alike; None for one that does not build."""
    got = backend.probe_conv(("tests.user_parts:small_cnn", "cnn", "mlp", "tests.user_parts:two_layer", "no_mod:x"))
    assert got == {"tests.user_parts:small_cnn": ["Conv2D c1"], "cnn": ["Conv2D conv1", "Conv2D conv2"],
                   "mlp": [], "tests.user_parts:two_layer": [], "no_mod:x": None}


def test_train_path_of_a_user_conv_net_is_read_from_its_model():
    """On JAX and a CPU a network with convolutions never trains in kbn's compiled loop (XLA runs
    convolutions in a loop body ~20x slower, jax-ml/jax#12868): Keras's fit, 50 steps per call; the
    reason names the layers. A dense one: the whole period as one loop."""
    from kbn import models

    conv = models.build("tests.user_parts:small_cnn", (28, 28, 1), 10, "batch")
    path = backend.train_path(conv)
    assert path["backend"] == "jax" and path["loop"] == "fit" and path["steps_per_call"] == 50
    assert "Conv2D c1" in path["reason"] and "jax-ml/jax#12868" in path["reason"]
    assert not backend.jax_loop_enabled(conv)
    dense = models.build("tests.user_parts:two_layer", (28, 28, 1), 10, "batch")
    assert backend.train_path(dense) == {"backend": "jax", "convolutions": 0, "loop": "kbn", "steps_per_call": 1000,
                                         "reason": "no convolutions: a whole period as one compiled loop"}
    assert backend.steps_per_call(dense) == 1000 and backend.jax_loop_enabled(dense)


def test_fast_compile_runs_several_steps_per_call_and_on_jax_no_jit_flag():
    from kbn import models

    assert keras.backend.backend() == "jax"  # conftest's backend
    assert backend.fast_compile_args(8, models.build("mlp", (28, 28, 1))) == {"steps_per_execution": 8}


def test_steps_per_call_whole_epochs_for_dense_networks_on_jax(monkeypatch):
    """The suite runs on JAX: a dense network's epoch is one compiled loop (up to 1000 steps), a
    convolutional one Keras's fit, 50 steps per call; KBN_JAX_LOOP=off is Keras's fit, 50 steps per call."""
    from kbn import models

    mlp, cnn = models.build("mlp", (28, 28, 1)), models.build("cnn", (28, 28, 1))
    assert backend.jax_loop_enabled()
    assert backend.steps_per_call(mlp) == backend.steps_per_call(models.build("deep_mlp", (28, 28, 1))) == 1000
    assert backend.steps_per_call(cnn) == 50 and not backend.jax_loop_enabled(cnn)
    monkeypatch.setenv("KBN_JAX_LOOP", "off")
    assert not backend.jax_loop_enabled() and backend.steps_per_call(mlp) == 50
    assert backend.train_path(mlp)["reason"] == "KBN_JAX_LOOP=off"


def test_default_pack_is_one_on_cpu():
    import jax

    assert jax.devices()[0].platform == "cpu"
    assert backend.default_pack() == 1


def test_compile_cache_goes_where_kbn_jax_cache_dir_says(tmp_path, monkeypatch):
    import jax

    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("KBN_JAX_CACHE_DIR", "off")
    backend.enable_compile_cache.cache_clear()
    try:
        assert backend.enable_compile_cache() is None
        backend.enable_compile_cache.cache_clear()
        monkeypatch.setenv("KBN_JAX_CACHE_DIR", str(tmp_path / "cache"))
        assert backend.enable_compile_cache() == str(tmp_path / "cache")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    finally:  # the session's own cache again, for the tests after this one
        backend.enable_compile_cache.cache_clear()
        jax.config.update("jax_compilation_cache_dir", before)


def test_nothing_is_decided_at_import():
    code = ("import sys, kbn.training.backend; "
            "print(sorted(m for m in ('keras', 'jax', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


NO_TF = """
import sys, time
t0 = time.perf_counter()
from kbn.cli import main
rc = main(sys.argv[1:])
print("tensorflow imported:", "tensorflow" in sys.modules)
print(f"seconds: {time.perf_counter() - t0:.2f}")
sys.exit(rc)
"""


@pytest.mark.slow
def test_jax_train_imports_no_tensorflow(tmp_path, write_cache):
    write_cache("mnist")
    env = dict(os.environ, KERAS_BACKEND="jax")
    cmd = [sys.executable, "-c", NO_TF, "train", "--dataset", "mnist", "--epochs", "1", "--batch-size", "64",
           "--logdir", str(tmp_path / "logs")]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tensorflow imported: False" in out.stdout, out.stdout[-2000:]
    assert "oneDNN" not in out.stderr


FUSED_BN = """
import json, sys, keras, numpy as np, tensorflow as tf
from kbn import models; from kbn.models import precision; from kbn.training import backend
traced = []  # the fused kernel's uses as the train step is traced: it ran, not Keras's fallback
fused_op = tf.compat.v1.nn.fused_batch_norm
tf.compat.v1.nn.fused_batch_norm = lambda x, *a, **k: traced.append(x.dtype.name) or fused_op(x, *a, **k)
rng = np.random.default_rng(0)
x, y = rng.random((96, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 96)
out = {}
for policy, fused in json.loads(sys.argv[2]):
    traced.clear()
    keras.utils.set_random_seed(0)
    with precision.policy(policy):
        model = models.build("tests.user_parts:small_cnn", (28, 28, 1), 10, "batch")
    names = backend.fuse_batch_norm(model) if fused else []
    model.compile(optimizer=sys.argv[1], loss="sparse_categorical_crossentropy", steps_per_execution=2)
    loss = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history["loss"]
    bn = model.get_layer("c1_batchnorm")
    out[f"{policy} {fused}"] = {"names": names, "loss": loss, "weights": {w.path: w.numpy().tolist() for w in model.weights},
                                "moving_variance": bn.moving_variance.numpy().tolist(),
                                "eval": float(model.evaluate(x, y, verbose=0)), "traced": sorted(set(traced))}
print(json.dumps(out))
"""


def _fused_bn(optimizer: str, arms: list) -> dict:
    import json

    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", FUSED_BN, optimizer, json.dumps(arms)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fused_batch_norm_on_tensorflow_gives_keras_numbers():
    """TensorFlow: batch norm through the fused kernel trains as Keras's own layer does (loss, weights,
    moving statistics, the evaluation with them), float32 rounding apart; the dense BN layer too."""
    got = _fused_bn("adam", [["float32", False], ["float32", True]])
    plain, fused = got["float32 False"], got["float32 True"]
    assert plain["traced"] == [] and fused["traced"] == ["float32"]
    assert fused["names"] == ["c1_batchnorm", "hidden_batchnorm"] and plain["names"] == []
    np.testing.assert_allclose(fused["loss"], plain["loss"], rtol=1e-4)
    np.testing.assert_allclose(fused["moving_variance"], plain["moving_variance"], rtol=1e-4, atol=1e-6)
    assert fused["eval"] == pytest.approx(plain["eval"], rel=1e-4)
    # a bias into batch norm has a zero gradient up to rounding, which Adam scales to steps of lr: noise,
    # which the norm's moving mean takes in (the evaluation with it agrees above)
    into_bn = {"c1/bias", "hidden/bias", "c1_batchnorm/moving_mean", "hidden_batchnorm/moving_mean"}
    assert into_bn < set(plain["weights"]) and set(fused["weights"]) == set(plain["weights"])
    for path in set(plain["weights"]) - into_bn:
        np.testing.assert_allclose(fused["weights"][path], plain["weights"][path], rtol=1e-3, atol=1e-5, err_msg=path)


@pytest.mark.slow
def test_fused_batch_norm_takes_bfloat16_and_loses_no_more_than_keras_does():
    """Under mixed_bfloat16 the fused kernel takes the bfloat16 convolution output itself (it used to fall
    back to Keras's dozen elementwise passes, which made BN cost the bf16 CNN 2x its time), and lands as
    near float32 training as Keras's own bfloat16 layer does: every weight within 2.5x Keras's distance.
    SGD, not Adam: Adam scales the rounding noise of a near-zero gradient up to whole steps of lr."""
    got = _fused_bn("sgd", [["float32", False], ["mixed_bfloat16", False], ["mixed_bfloat16", True]])
    ref, plain, fused = got["float32 False"], got["mixed_bfloat16 False"], got["mixed_bfloat16 True"]
    assert plain["traced"] == [] and fused["traced"] == ["bfloat16"]
    np.testing.assert_allclose(fused["loss"], plain["loss"], rtol=1e-3)
    assert fused["eval"] == pytest.approx(plain["eval"], rel=1e-3)
    for path, w in ref["weights"].items():
        keras_err = np.abs(np.subtract(plain["weights"][path], w)).max()
        fused_err = np.abs(np.subtract(fused["weights"][path], w)).max()
        assert fused_err <= 2.5 * keras_err + 1e-5, (path, fused_err, keras_err)


KERAS_INPUT = """
import json, keras, numpy as np
from kbn import models
from kbn.training import backend
rng = np.random.default_rng(0)
x, y = rng.random((200, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 200).astype(np.int32)
out = {}
for how in ("arrays", "kbn"):
    keras.utils.set_random_seed(0)
    model = models.build("tests.user_parts:small_cnn", (28, 28, 1), 10, "batch")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=3)
    given = backend.keras_input(x, y, 32) if how == "kbn" else {"x": x, "y": y, "batch_size": 32}
    loss = model.fit(**given, epochs=2, shuffle=False, verbose=0).history["loss"]
    ev = model.evaluate(**(backend.keras_input(x, y, 64) if how == "kbn" else {"x": x, "y": y, "batch_size": 64}),
                        verbose=0, return_dict=True)
    out[how] = {"loss": loss, "eval": ev, "w": [w.tolist() for w in model.get_weights()]}
data = backend.keras_input(x, y, 32)["x"]
out["autotune"] = data.options().autotune.enabled
out["batches"] = [int(b[0].shape[0]) for b in data]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_keras_input_on_tensorflow_is_the_same_batches_without_autotune():
    """kbn's tf.data for fit and evaluate on TensorFlow: the same batches in the same order as Keras's
    own array pipeline (same losses, evaluation and weights), with tf.data's autotuning off (its
    teardown stalled a third of Keras's calls by 0.3-0.6 s: README, "Backends and speed")."""
    import json

    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", KERAS_INPUT], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["autotune"] is False and got["batches"] == [32] * 6 + [8]
    assert got["kbn"]["loss"] == got["arrays"]["loss"] and got["kbn"]["eval"] == got["arrays"]["eval"]
    for a, b in zip(got["kbn"]["w"], got["arrays"]["w"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_keras_input_elsewhere_is_the_arrays():
    x, y = np.zeros((4, 2)), np.zeros(4)
    assert backend.keras_input(x, y, 2) == {"x": x, "y": y, "batch_size": 2}  # the suite runs on JAX
