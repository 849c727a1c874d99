"""kbn: does normalization help this optimizer, on this network, and by how much?

The public API is the names in `__all__` (README, "Python API"); everything else is kbn's own and may
change. They are imported when first used, so `import kbn` stays light and never imports Keras; the
first name that needs Keras settles its backend as the CLI does (KERAS_BACKEND, else JAX).

    kbn.TrainConfig, kbn.RunSettings, kbn.SweepConfig  settings as data, validated (kbn.core.config)
    kbn.load_sweep(path) -> SweepConfig                a sweep file, validated
    kbn.train(cfg, logdir) -> RunResult                one run, fully logged (kbn.training.train)
    kbn.train_many(cfgs, logdir) -> [RunResult]        runs of one cell, packed where they can be
    kbn.run_sweep(sweep, logdir) -> int                a sweep to its end; its failed trials
    kbn.open_sweep(folder) -> Sweep                    a sweep folder as pandas tables
    kbn.report.build(source) -> Document              the report of a sweep folder or a CSV
    kbn.models.build, .dense_block, .norm_layer        the networks, and the blocks for your own
    kbn.data.load(name) -> Dataset                     a dataset with the thesis's splits
    kbn.NetworkBuilder, kbn.OptimizerFactory, kbn.NormLayerClass   your own components' contracts
    kbn.configure_logging(level)                       what kbn's log prints: quiet, info, verbose
    kbn.KbnError, ConfigError, DataError, Interrupted  the errors kbn raises and explains

The package's folders are its data flow, each importing only those below it (README, "Layout"):
core -> data -> models -> runs -> training -> sweep -> report -> tools.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kbn.core.version import __version__

# public name -> the module that holds it (a subpackage itself where the name is one)
_HOMES = {
    "TrainConfig": "kbn.core.config", "RunSettings": "kbn.core.config", "SweepConfig": "kbn.core.config",
    "load_sweep": "kbn.core.config",
    "train": "kbn.training.train", "train_many": "kbn.training.train", "RunResult": "kbn.training.train",
    "run_sweep": "kbn.sweep.runner",
    "open_sweep": "kbn.sweep.view", "Sweep": "kbn.sweep.view",
    "NetworkBuilder": "kbn.core.contracts", "OptimizerFactory": "kbn.core.contracts",
    "NormLayerClass": "kbn.core.contracts",
    "configure_logging": "kbn.core.console",
    "KbnError": "kbn.core.errors", "ConfigError": "kbn.core.errors", "DataError": "kbn.core.errors",
    "Interrupted": "kbn.core.errors",
    "report": None, "models": None, "data": None,
}
_ALIASES = {"configure_logging": "configure"}
# the names whose modules import Keras: the backend is settled first (kbn.core.startup.settle_backend)
_KERAS = {"train", "train_many", "RunResult", "run_sweep", "models"}
__all__ = ["__version__", "TrainConfig", "RunSettings", "SweepConfig", "load_sweep", "train", "train_many", "RunResult",
           "run_sweep", "open_sweep", "Sweep", "NetworkBuilder", "OptimizerFactory", "NormLayerClass",
           "configure_logging", "KbnError", "ConfigError", "DataError", "Interrupted", "report", "models", "data"]

if TYPE_CHECKING:  # what a type checker reads (py.typed); at run time __getattr__ imports on first use
    from kbn import data, models, report
    from kbn.core.config import RunSettings, SweepConfig, TrainConfig, load_sweep
    from kbn.core.console import configure as configure_logging
    from kbn.core.contracts import NetworkBuilder, NormLayerClass, OptimizerFactory
    from kbn.core.errors import ConfigError, DataError, Interrupted, KbnError
    from kbn.sweep.runner import run_sweep
    from kbn.sweep.view import Sweep, open_sweep
    from kbn.training.train import RunResult, train, train_many


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'kbn' has no attribute {name!r}")
    home = _HOMES[name]
    if name in _KERAS:
        from kbn.core.startup import settle_backend

        settle_backend()
    value = importlib.import_module(f"kbn.{name}") if home is None else \
        getattr(importlib.import_module(home), _ALIASES.get(name, name))
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
