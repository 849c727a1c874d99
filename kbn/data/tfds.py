"""tensorflow-datasets, where there is a network: the last of kbn's sources (kbn.data.loading). Without
one, `tfds.load` retries for minutes before failing, so the network is checked first, quickly.
"""

from __future__ import annotations

import os
import socket
import threading

import numpy as np


def _network_ok(timeout: float = 3.0) -> bool:
    """KBN_OFFLINE=1: no; KBN_OFFLINE=0: yes; else a name lookup, bounded so an offline
    machine fails in seconds rather than letting tfds retry for minutes."""
    flag = (os.environ.get("KBN_OFFLINE") or "").strip()
    if flag:  # set but empty counts as unset: check, rather than wait for tfds's retries
        return flag in ("0", "false", "no")
    result = []

    def lookup():
        try:
            socket.getaddrinfo("storage.googleapis.com", 443)
            result.append(True)
        except OSError:
            pass

    t = threading.Thread(target=lookup, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result)


def read_tfds(name: str) -> tuple[dict[str, np.ndarray] | None, str]:
    """Arrays from tensorflow-datasets (with `num_classes` from the builder's info), or (None, why not)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # an extra: kbn[tfds]
        return None, f"tensorflow-datasets is not importable ({e}; pip install 'kbn[tfds]')"
    tfds_dir = os.environ.get("TFDS_DATA_DIR")
    try:
        prepared = tfds.builder(name, data_dir=tfds_dir).is_prepared()
    except Exception:  # noqa: BLE001 - an unknown state means: try downloading
        prepared = False
    if not prepared and not _network_ok():
        return None, "tensorflow-datasets has no copy and there is no network to download one"
    arrays = {}
    try:
        splits, info = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=tfds_dir, with_info=True)
        label = info.features[info.supervised_keys[1]]
        if not hasattr(label, "num_classes"):
            return None, f"tensorflow-datasets: {name} has no class labels ({type(label).__name__})"
        arrays["num_classes"] = np.array(label.num_classes)
        # Batches, not batch_size=-1: under TF 2.21 a whole-split batch aborts the process
        # (std::length_error in vector::reserve).
        for split, ds in zip(("train", "test"), splits):
            xs, ys = zip(*tfds.as_numpy(ds.batch(10_000)))
            arrays[f"x_{split}"] = np.concatenate(xs).astype(np.uint8)
            arrays[f"y_{split}"] = np.concatenate(ys).astype(np.uint8)
    except Exception as e:  # noqa: BLE001 - any failure here means "this source is unavailable"
        first = str(e).splitlines()[0] if str(e) else ""
        return None, f"tensorflow-datasets failed: {type(e).__name__}: {first}"
    return arrays, "tfds"
