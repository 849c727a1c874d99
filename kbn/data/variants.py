"""The dataset variants' functions (kbn.core.registry's Variant records name them): each makes a
split's images from its base dataset's, deterministically from a seed.
"""

from __future__ import annotations

import numpy as np


def clutter(x: np.ndarray, seed: int, pieces: int = 8, piece: int = 8, margin: int = 32) -> np.ndarray:
    """Cluttered variant (as in Mnih et al.'s cluttered MNIST): each image pasted at a random place
    on a (H + margin)-square canvas, with `pieces` random piece x piece crops of other images of the
    same split scattered over it (pixel-wise maximum). Deterministic for a given seed."""
    n, h, w, c = x.shape
    size = max(h, w) + margin
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, c), dtype=np.uint8)
    obj_r = rng.integers(0, size - h + 1, n)
    obj_c = rng.integers(0, size - w + 1, n)
    src = rng.integers(0, n, (n, pieces))
    crop_r = rng.integers(0, h - piece + 1, (n, pieces))
    crop_c = rng.integers(0, w - piece + 1, (n, pieces))
    dst_r = rng.integers(0, size - piece + 1, (n, pieces))
    dst_c = rng.integers(0, size - piece + 1, (n, pieces))
    for k in range(pieces):
        for i in range(n):
            crop = x[src[i, k], crop_r[i, k] : crop_r[i, k] + piece, crop_c[i, k] : crop_c[i, k] + piece]
            region = out[i, dst_r[i, k] : dst_r[i, k] + piece, dst_c[i, k] : dst_c[i, k] + piece]
            np.maximum(region, crop, out=region)
    for i in range(n):
        region = out[i, obj_r[i] : obj_r[i] + h, obj_c[i] : obj_c[i] + w]
        np.maximum(region, x[i], out=region)
    return out


def binarise(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Binary images (Ioffe & Szegedy 2015, section 4.1): a pixel is on when it is > 0.5 after
    scaling to [0, 1], i.e. > 127.5 of 255; stored as 0 or 255, so `load` gives exactly 0.0 or 1.0.
    (`seed` is unused: a variant's function takes one.)"""
    return np.where(x > 127, np.uint8(255), np.uint8(0))


# registry.Variant.make -> the function (a test checks every registered variant has one)
MAKERS = {"clutter": clutter, "binarise": binarise}
