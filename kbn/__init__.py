"""kbn: does normalization help this optimizer, on this network, and by how much?

Data flows config -> data -> models/optim -> train (logs) -> tune -> report.
"""

__version__ = "0.1.0"
