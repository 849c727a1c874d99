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

# Measured with `kbn bench` (README, "Backends and speed"): JAX trains the MLPs 2-4x faster than
# TensorFlow on CPU and is what the GPU host has; TensorFlow (oneDNN) runs CNNs ~3x faster on CPU.
DEFAULT_BACKEND = "jax"


def is_conv(arch: str) -> bool:
    """A convolutional network of kbn's own (kbn.registry; no Keras is imported). A user's network
    counts as dense: set KERAS_BACKEND for a convolutional one of your own."""
    from kbn import registry
    from kbn.errors import ConfigError

    try:
        return registry.get("arch", arch).conv
    except ConfigError:
        return False  # a bad name is reported by the command itself


def choose_backend(archs) -> str:
    """KERAS_BACKEND if set; else the fastest measured backend for these networks on this machine."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    has_jax = importlib.util.find_spec("jax") is not None
    has_tf = importlib.util.find_spec("tensorflow") is not None
    on_gpu = shutil.which("nvidia-smi") is not None
    if has_tf and (not has_jax or (not on_gpu and any(is_conv(a) for a in archs))):
        return "tensorflow"
    return DEFAULT_BACKEND if has_jax else "tensorflow"


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


def steps_per_call(arch: str) -> int:
    """The most training steps one compiled call runs (a period's shortest span caps it). JAX: a whole
    epoch of a dense network as one compiled loop (kbn.jax_loop); a convolutional one, 50 steps, so
    Ctrl-C and the heartbeat still answer within seconds on a CPU. TensorFlow: 50 (kbn bench)."""
    return 1000 if jax_loop_enabled() and not is_conv(arch) else 50


def jax_loop_enabled() -> bool:
    """Periods train as compiled loops (kbn.jax_loop) on JAX unless KBN_JAX_LOOP=off, which gives
    Keras's own `fit` (for comparison: same steps, same numbers up to float rounding)."""
    import keras

    return keras.backend.backend() == "jax" and os.environ.get("KBN_JAX_LOOP", "on") != "off"


def fast_compile_args(steps_per_execution: int, arch: str) -> dict:
    """Several steps per compiled call, so no per-step Python runs between them; on TensorFlow also
    XLA for the MLPs, where it pays together with steps_per_execution (it slows TF's CNNs on CPU:
    kbn bench, README)."""
    import keras

    args = {"steps_per_execution": steps_per_execution}
    if keras.backend.backend() == "tensorflow":
        args["jit_compile"] = not is_conv(arch)
    return args


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
    from kbn import compat

    compat.mark_tensorflow_absent()  # not if someone imported TensorFlow already
