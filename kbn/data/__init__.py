"""Datasets: the thesis's splits of MNIST, Fashion-MNIST and CIFAR-10 (and any tensorflow-datasets set,
a researcher's npz file, their variants) as in-memory arrays, prepared once and cached. `load` is the
entry (kbn.data.loading); the original files' readers are kbn.data.files, tensorflow-datasets is
kbn.data.tfds, the variants' functions kbn.data.variants.
It must not know models, training or Keras.

    >>> from kbn import data
    >>> ds = data.load("fashion_mnist", subset=5000)
    >>> ds.x_train.shape, ds.sizes()
"""

from kbn.data.loading import (SPLITS, Dataset, cache_dir, cache_path, check_data_dir, load, prepare, split_official,
                              write_cache)

__all__ = ["SPLITS", "Dataset", "cache_dir", "cache_path", "check_data_dir", "load", "prepare", "split_official",
           "write_cache"]
