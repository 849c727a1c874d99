"""Every backend decision kbn makes for the user: which Keras backend to run (`choose_backend`),
JAX's compile cache on disk (`enable_compile_cache`), how a model compiles and trains fast
(`fast_compile_args`, `steps_per_call`, `jax_loop_enabled`), how many trials to train packed
(`default_pack`), and keeping TensorFlow out of a JAX process (`keep_tensorflow_out`). The numbers
behind them are `kbn bench`'s (README, "Backends and speed"). Nothing runs at import: each caller asks
when it needs the answer, and only `choose_backend` may run before Keras is imported (it reads no
Keras). It must not know sweeps, runs or results.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from pathlib import Path

from kbn.core.startup import DEFAULT_BACKEND
from kbn.training import handoff



def is_conv(arch: str) -> bool:
    """kbn's own record of a network (kbn.core.registry; no Keras imported): sizes a sweep's workers only.
    Which path a network trains on is read from the built model (`conv_layers`, `train_path`)."""
    from kbn.core import registry
    from kbn.core.errors import ConfigError

    try:
        return registry.get("arch", arch).conv
    except ConfigError:
        return False  # a bad name is reported by the command itself


def conv_layers(model) -> list[str]:
    """The convolutions of a built Keras model, as "Conv2D conv1" (nested models walked): what makes
    XLA's CPU backend slow inside a compiled loop, whoever wrote the network."""
    out = []
    for layer in getattr(model, "layers", []):
        if "Conv" in type(layer).__name__ and hasattr(layer, "kernel"):
            out.append(f"{type(layer).__name__} {layer.name}")
        out += conv_layers(layer) if hasattr(layer, "layers") else []
    return out


# Builds each network (JAX, no TensorFlow) and prints its convolutions: the backend is chosen before
# Keras is imported in kbn's own process, so the built model is read in a child.
_PROBE = """
import json, sys
import keras
from kbn import models; from kbn.training import backend
backend.keep_tensorflow_out()
out = {}
for arch in json.loads(sys.argv[1]):
    for shape in ((28, 28, 1), (32, 32, 3)):
        try:
            out[arch] = backend.conv_layers(models.build(arch, shape, 10))
            break
        except Exception:  # noqa: BLE001 - the command itself reports a network that does not build
            out[arch] = None
print(json.dumps(out))
"""


@functools.cache
def probe_conv(archs: tuple) -> dict:
    """{arch: its built model's convolutions, or None where it did not build}, read in a child process
    on JAX (a few seconds: Keras's import). A network that fails here fails, reported, in the command."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), str(Path(__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(archs))], env=env, capture_output=True,
                         text=True, timeout=300)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if out.returncode == 0 and lines else {a: None for a in archs}


def choose_backend(archs) -> str:
    """KERAS_BACKEND if set; else the fastest measured backend for these networks on this machine:
    TensorFlow where a built network has convolutions on a CPU (oneDNN's convolutions; `train_path`)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    has_jax = importlib.util.find_spec("jax") is not None
    has_tf = importlib.util.find_spec("tensorflow") is not None
    on_gpu = shutil.which("nvidia-smi") is not None
    if not has_jax:
        return "tensorflow"
    if not has_tf or on_gpu or not archs:
        return DEFAULT_BACKEND
    convs = probe_conv(tuple(dict.fromkeys(archs)))
    return "tensorflow" if any(convs.values()) else DEFAULT_BACKEND


@functools.cache
def enable_compile_cache() -> str | None:
    """JAX: keep compiled steps on disk, keyed by the program; returns the folder (None: not JAX, or
    KBN_JAX_CACHE_DIR=off). Every trial of a cell compiles the same program (the learning rate is a
    variable, not a constant), so from the second trial on, and in a resumed sweep, the ~1.5 s of XLA
    compilation per trial becomes a cache hit. KBN_JAX_CACHE_DIR moves it. Once per process: call it
    before training."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    where = os.environ.get("KBN_JAX_CACHE_DIR") or str(Path(base) / "kbn" / "jax-cache")
    if where == "off":
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", 2 * 2**30)  # bytes; oldest entries go first
    # JAX decides once, at its first compilation, whether a cache is in use: let it decide again.
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()
    return where


def _on_cpu() -> bool:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].platform == "cpu"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_physical_devices("GPU")
    return True


def train_path(model) -> dict:
    """How `model` trains here, read from the built model, and why: {"backend", "loop" ("kbn": a whole
    period as one compiled loop, kbn.training.jax_loop; "fit": Keras's fit, one compiled call per
    `steps_per_call` steps), "steps_per_call", "jit_compile" (TensorFlow), "reason"}. On a CPU a
    network with convolutions never trains inside a compiled while loop: XLA's CPU backend runs them
    there ~20x slower (jax-ml/jax#12868; kbn bench, README)."""
    import keras

    backend, convs = keras.backend.backend(), conv_layers(model)
    has = f"has {len(convs)} convolution layer(s) ({', '.join(convs[:3])}{', ...' if len(convs) > 3 else ''})"
    base = {"backend": backend, "convolutions": len(convs)}
    if backend == "tensorflow":
        return {**base, "loop": "fit", "steps_per_call": 50, "jit_compile": not convs,
                "reason": f"{has}: oneDNN's convolutions, no XLA (it slows them)" if convs
                else "no convolutions: XLA with 50 steps per call"}
    if backend != "jax":
        return {**base, "loop": "fit", "steps_per_call": 50, "reason": "Keras's fit"}
    if os.environ.get("KBN_JAX_LOOP", "on") == "off":
        return {**base, "loop": "fit", "steps_per_call": 50, "reason": "KBN_JAX_LOOP=off"}
    if convs and _on_cpu():
        return {**base, "loop": "fit", "steps_per_call": 50,
                "reason": f"{has}: XLA's CPU backend runs convolutions inside a compiled loop ~20x slower "
                          "(jax-ml/jax#12868), so Keras's fit, one step per dispatch; "
                          f"{_why_not_handed()}"}
    return {**base, "loop": "kbn", "steps_per_call": 50 if convs else 1000,
            "reason": f"{has}: on a GPU, a compiled loop of 50 steps" if convs
            else "no convolutions: a whole period as one compiled loop"}


def handoff_wanted(path: dict, cfgs) -> str | None:
    """Why these runs should train in a TensorFlow child (kbn.training.handoff), or None to train here:
    `path` is `train_path`'s for their network (a conv net on JAX on a CPU is "fit" with convolutions)."""
    if path.get("backend") != "jax" or path.get("loop") != "fit" or not path.get("convolutions"):
        return None
    if os.environ.get(handoff.OFF, "on") == "off" or os.environ.get(handoff.HANDED):
        return None
    if importlib.util.find_spec("tensorflow") is None:
        return None
    local = [c for c in cfgs for name in (c.arch, c.norm, c.optimizer) if str(name).startswith("__main__:")]
    if local:  # a child cannot import what this program's own script defines
        return None
    return ("this process runs JAX, whose CPU convolutions are 3-4x slower than TensorFlow's oneDNN ones: "
            f"trained in a TensorFlow child process ({handoff.OFF}=off keeps them here)")


def _why_not_handed() -> str:
    """What a conv net's path on JAX says when it stays here: how to get the faster one."""
    if os.environ.get(handoff.OFF, "on") == "off":
        return f"{handoff.OFF}=off keeps it in this JAX process"
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow is not installed (pip install 'kbn[tensorflow]' trains conv nets 3-4x faster here)"
    return "on a CPU, KERAS_BACKEND=tensorflow trains them 3-4x faster"


def steps_per_call(model) -> int:
    """The most training steps one compiled call runs (a period's shortest span caps it): `train_path`'s."""
    return train_path(model)["steps_per_call"]


def jax_loop_enabled(model=None) -> bool:
    """kbn's compiled loops (kbn.training.jax_loop) train `model` (None: any network with no convolutions): on
    JAX unless KBN_JAX_LOOP=off, which gives Keras's own `fit` (same steps, same numbers up to float
    rounding), and never a convolutional network on a CPU (`train_path`)."""
    import keras

    if model is not None:
        return train_path(model)["loop"] == "kbn"
    return keras.backend.backend() == "jax" and os.environ.get("KBN_JAX_LOOP", "on") != "off"


def fast_compile_args(steps_per_execution: int, model) -> dict:
    """Several steps per compiled call, so no per-step Python runs between them; on TensorFlow also
    XLA for networks without convolutions, where it pays together with steps_per_execution (it slows
    TF's CNNs on CPU: kbn bench, README)."""
    import keras

    args = {"steps_per_execution": steps_per_execution}
    if keras.backend.backend() == "tensorflow":
        args["jit_compile"] = train_path(model)["jit_compile"]
    return args


def keras_input(x, y, batch_size: int) -> dict:
    """The data kbn hands Keras's `fit` or `evaluate` (as keyword arguments x, y, batch_size): on
    TensorFlow, one array pair as a tf.data pipeline of its in-memory batches with tf.data's autotuning
    and default rewrites off. Keras's own pipeline for arrays prefetches with AUTOTUNE, and tearing
    it down at the end of a call stalled a third of the calls by 0.3-0.6 s (the CNN's 5,000-image epoch
    took 0.75 s, or 1.30 s: kbn bench and the README's "Backends and speed"): a stall in every period,
    counted as training time. The same batches in the same order. Several targets (packed trials) and
    the other backends keep the arrays."""
    import keras

    if keras.backend.backend() != "tensorflow" or isinstance(y, (list, tuple)):
        return {"x": x, "y": y, "batch_size": batch_size}
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).with_options(options)
    return {"x": data, "y": None, "batch_size": None}


def default_pack() -> int:
    """How many trials to pull and train packed at once, where it pays (kbn bench, README): on a
    GPU, 32; on CPU, 1 (2 cores are bound by arithmetic, and a smoke sweep ran no faster packed)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if jax.devices()[0].platform == "gpu":
            return 32
    return 1


def keep_tensorflow_out() -> None:
    """On the JAX (or torch) backend, tell Keras that TensorFlow is not there. Keras asks
    `tensorflow.available` to seed tf.random (set_random_seed) and to serialise a model (model.keras),
    which imports TensorFlow when it is installed: seconds of start-up and absl/oneDNN lines, for
    nothing kbn uses (no tf.data). Keras has no public switch for this: it sets the flag of
    keras.src.utils.module_utils' lazy TensorFlow module."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    from kbn.core import compat

    compat.mark_tensorflow_absent()  # not if someone imported TensorFlow already


# FusedBatchNormV3's input dtypes (its T; the statistics, scale and offset are float32 for each)
_FUSED_DTYPES = ("float32", "bfloat16", "float16")


def _fused_call(layer, plain_call):
    """`layer`'s call with its training-mode batch statistics as one TensorFlow FusedBatchNormV3 (oneDNN's
    fused kernel, forward and backward) instead of Keras 3's moments + normalize: a dozen elementwise
    passes over a convolution's output, which cost the CNN 3x its time on 2 cores (README). Same
    arithmetic: the batch's biased variance normalizes and enters the moving average (the op returns it
    Bessel-corrected: undone). Under mixed_bfloat16 the kernel takes the bfloat16 convolution output as
    it is and keeps its sums, statistics, scale and offset in float32, as Keras's layer does by casting
    up (which, unfused, made BN cost bf16 the CNN 2x its time). Anything else (inference, a mask,
    renorm, not NHWC, float64) is Keras's."""
    import tensorflow as tf

    def call(inputs, training=None, mask=None):
        if not (training and layer.trainable) or mask is not None or layer.renorm or len(inputs.shape) != 4 \
                or layer.axis not in (-1, 3) or inputs.dtype.name not in _FUSED_DTYPES or not (layer.scale and layer.center):
            return plain_call(inputs, training=training, mask=mask)
        y, mean, var = tf.compat.v1.nn.fused_batch_norm(inputs, layer.gamma, layer.beta, epsilon=layer.epsilon,
                                                         data_format="NHWC", is_training=True)[:3]
        n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        var = var * (n - 1.0) / n
        m = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * m + mean * (1.0 - m))
        layer.moving_variance.assign(layer.moving_variance * m + var * (1.0 - m))
        return y

    return call


def fuse_batch_norm(model) -> list[str]:
    """On TensorFlow, each BatchNormalization of `model` (a user's subclass too, unless it has its own
    call) trains through the fused kernel (`_fused_call`); returns their names ([] elsewhere). Keras 3
    has no fused switch: the layer's own `call` is replaced on the instance (the class, the saved
    model and the other backends are untouched)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return []
    found = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
             and type(layer).call is keras.layers.BatchNormalization.call and "call" not in vars(layer)]
    for layer in found:
        layer.call = _fused_call(layer, layer.call)
    return [layer.name for layer in found]
