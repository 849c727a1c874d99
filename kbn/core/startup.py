"""What happens before Keras is imported: which backend it loads (`settle_backend`, for the Python
API; the CLI's `kbn.training.backend.choose_backend` also reads the networks), and TensorFlow started
with the C++ lines it writes at start-up in a file (`start_tensorflow`). Keras fixes its backend at
its first import, so whatever imports Keras for the user (kbn.train, kbn.run_sweep, kbn.models) asks
here first. It imports no Keras at load (TensorFlow only inside `start_tensorflow`).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from kbn.core import console

# Measured with `kbn bench` (README, "Backends and speed"): JAX trains the MLPs 2-4x faster than
# TensorFlow on CPU and is what the GPU host has; TensorFlow (oneDNN) runs CNNs ~3x faster on CPU.
DEFAULT_BACKEND = "jax"


def start_tensorflow() -> str:
    """TensorFlow imported and its devices listed, with the C++ lines that writes (absl's, oneDNN's,
    CUDA's probe: to file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL says) in a file, so a process's
    first lines are kbn's (the CLI on TensorFlow, the hand-off's child, the Python API on TensorFlow);
    the file's path. What TensorFlow's C++ says later reaches the terminal."""
    path, restore = console.native_lines_to_file("tensorflow")
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe lines come with the first look at the devices
    finally:
        restore()
    console.LOGGER.debug(f"kbn: TensorFlow's own start-up lines: {path}")  # kbn --log verbose names it
    return path


def settle_backend() -> str:
    """The Python API's backend, settled before Keras is imported (kbn.train, kbn.run_sweep, kbn.models
    ask first), as the CLI's: KERAS_BACKEND where set, else kbn's default, JAX, where it is installed
    (a conv net met on a CPU is then handed to TensorFlow: kbn.training.handoff), else TensorFlow,
    which starts with its C++ start-up lines in a file. Keras's own default (TensorFlow, also written
    into ~/.keras/keras.json at its first import) would train the MLPs 3-5x slower here. Once Keras is
    imported its backend is fixed: nothing changes."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    chosen = os.environ.get("KERAS_BACKEND")
    if not chosen:
        chosen = DEFAULT_BACKEND if importlib.util.find_spec("jax") is not None else "tensorflow"
        os.environ["KERAS_BACKEND"] = chosen
    if chosen == "tensorflow" and "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow"):
        start_tensorflow()
    return chosen
