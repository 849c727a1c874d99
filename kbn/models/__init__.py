"""What trains: the thesis's and the poster's networks (kbn.models.networks: each builder's docstring
states its architecture), the optimizers by name (kbn.models.optimizers), K trials of one cell as one
Keras model (kbn.models.packed) and the arithmetic a network computes in (kbn.models.precision).
It must not know runs, logs or sweeps.

A network of one's own places its norms as kbn's do, with `dense_block` or `norm_layer` (README,
"Your own components"):

    >>> from kbn.models import dense_block, norm_layer
    >>> from kbn import models
    >>> net = models.build("cnn", (28, 28, 1), 10, norm="batch")
"""

from kbn.core.startup import settle_backend

settle_backend()  # `from kbn.models import dense_block` may be a program's first import of Keras

# re-exported by name (`X as X`): kbn.models.dense_block, and the builders as import strings (kbn.models:cnn)
from kbn.models.networks import (  # noqa: E402 - after the backend is settled
    BUILDERS as BUILDERS, block as block, build as build, cnn as cnn, deep_cnn as deep_cnn, deep_mlp as deep_mlp,
    dense_block as dense_block, ioffe_mlp as ioffe_mlp, mlp as mlp, norm_layer as norm_layer)
