"""Backend decisions that are not the user's to make: kept in one place, run when asked, not at import."""

from __future__ import annotations


def keep_tensorflow_out() -> None:
    """On the JAX (or torch) backend, tell Keras that TensorFlow is not there. Keras asks
    `tensorflow.available` to seed tf.random (set_random_seed) and to serialise a model (model.keras),
    which imports TensorFlow when it is installed: seconds of start-up and absl/oneDNN lines, for
    nothing kbn uses (no tf.data)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    from keras.src.utils import module_utils

    if module_utils.tensorflow.module is None:  # not imported by anyone yet: keep it that way
        module_utils.tensorflow._available = False
