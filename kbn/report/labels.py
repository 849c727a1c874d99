"""How the reports name things: datasets, networks and a missing value, as a reader sees them
(optimizer names are config.OPTIMIZER_NAMES). It holds names only: it must not know results,
statistics or any output format."""

from __future__ import annotations

from kbn.config import base_dataset

MISSING = "—"
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
ARCH_NAMES = {"mlp": "MLP", "cnn": "CNN", "deep_mlp": "deep MLP", "deep_cnn": "deep CNN", "ioffe_mlp": "Ioffe MLP"}


def display_name(dataset: str, arch: str | None = None) -> str:
    """A dataset's name as a reader knows it ('Fashion-MNIST', 'cluttered MNIST', 'binary MNIST'), with
    the network's after it when given ('MNIST + deep MLP')."""
    base = base_dataset(dataset)
    variant = dataset.removesuffix(f"_{base}")  # cluttered, binary
    d = DATASET_NAMES.get(base, base) if base == dataset else f"{variant} {DATASET_NAMES.get(base, base)}"
    return d if arch is None else f"{d} + {ARCH_NAMES.get(arch, arch)}"
