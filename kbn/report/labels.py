"""How the reports name things: datasets, networks, optimizers and a missing value, as a reader sees
them (each component's display name is its kbn.core.registry record's; a user's, what its run folders
recorded). It holds names only: it must not know results, statistics or any output format."""

from __future__ import annotations

from kbn.core import registry

MISSING = "—"


def optimizer_name(opt: str) -> str:
    return registry.display("optimizer", opt)


def arch_name(arch: str) -> str:
    return registry.display("arch", arch)


def display_name(dataset: str, arch: str | None = None) -> str:
    """A dataset's name as a reader knows it ('Fashion-MNIST', 'cluttered MNIST'), with the
    network's after it when given ('MNIST + deep MLP')."""
    d = registry.display("dataset", dataset)
    return d if arch is None else f"{d} + {arch_name(arch)}"
