"""kbn: does normalization help this optimizer, on this network, and by how much?
It holds only the version and the public names; it must not import Keras (the CLI chooses the backend first).

Data flows config -> data -> models/optim -> train (logs) -> tune -> report.
`kbn.open_sweep(DIR)` reads a sweep folder as Python objects (kbn.api).
"""

__version__ = "0.1.0"
__all__ = ["open_sweep", "Sweep"]


def __getattr__(name):
    # kbn.api needs pandas: imported when first asked for, so `import kbn` (and the CLI) stays light
    if name in ("open_sweep", "Sweep"):
        from kbn import api

        return getattr(api, name)
    raise AttributeError(f"module 'kbn' has no attribute {name!r}")
