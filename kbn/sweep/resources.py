"""How many local workers a CPU sweep should start: the machine's cores and memory, and what one trial
of a sweep occupies (measured with `kbn bench` and by hand on a 2-core machine; README, "Cores").
It must not know sweeps' contents beyond their sizes, nor Keras.

Measured here (2 cores, 24 GiB): one JAX trial of a dense network keeps about one core busy (118-121%
CPU, start-up included) and two side by side each train as fast as one alone; one TensorFlow trial of a
convolutional network keeps both cores busy (two side by side gained nothing). Peak memory per worker
process: about 1.1 GB for an MLP on Fashion-MNIST (the float32 dataset is 0.22 GB of it).

The rule: workers = min(usable cores // cores per trial, usable memory // memory per worker, trials the
sweep can run at once), at least 1. Usable cores respect the process's CPU affinity and a cgroup CPU
quota; usable memory is MemAvailable (or the cgroup's limit, if lower) less a quarter for the chief and
the system. Each worker is then pinned to its own cores, so trials do not fight over them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

CORES_PER_TRIAL = {"dense": 1, "conv": 2}  # measured on 2 cores: see the module docstring
WORKER_BASE_BYTES = 0.9e9  # a worker's interpreter, Keras, XLA and one small network, dataset aside
GPU_WORKERS = 1  # one process drives a GPU; trials pack instead (kbn.models.packed)


@dataclasses.dataclass(frozen=True)
class Machine:
    cores: int  # usable by this process
    memory: float  # bytes usable
    gpu: bool = False


def usable_cores() -> int:
    """CPUs this process may run on (affinity), capped by a cgroup v2 or v1 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota()
    return max(1, min(n, math.floor(quota)) if quota else n)


def _cgroup_cpu_quota() -> float | None:
    try:
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if q <= 0 else q / period
    except (OSError, ValueError):
        return None


def usable_memory() -> float:
    """MemAvailable, or what the cgroup still allows if that is less (bytes)."""
    avail = math.inf
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            if text != "max":
                avail = min(avail, int(text) - int(Path(used).read_text()))
        except (OSError, ValueError):
            continue
    return avail if math.isfinite(avail) else 4e9


def this_machine(gpu: bool = False) -> Machine:
    return Machine(usable_cores(), usable_memory(), gpu)


def worker_bytes(dataset_bytes: float) -> float:
    """A worker's peak memory: the base, the scaled dataset and the batches gathered from it."""
    return WORKER_BASE_BYTES + 1.5 * dataset_bytes


def memory_capacity(machine: Machine, dataset_bytes: float) -> int:
    """How many workers fit in three quarters of the usable memory (the rest: chief and system)."""
    return max(1, int(0.75 * machine.memory // worker_bytes(dataset_bytes)))


@dataclasses.dataclass(frozen=True)
class Choice:
    workers: int
    why: str
    cores_each: int


def choose_workers(machine: Machine, conv: bool, dataset_bytes: float, parallel_trials: int) -> Choice:
    """Local workers for a sweep: `conv` whether any cell trains a convolutional network (it sets
    the cores a trial occupies), `dataset_bytes` the float32 size of the largest dataset (every worker
    holds its own copy), `parallel_trials` how many trials the sweep can run at once."""
    if machine.gpu:
        return Choice(GPU_WORKERS, "a GPU: one process, trials packed", machine.cores)
    per_trial = CORES_PER_TRIAL["conv" if conv else "dense"]
    per_worker = worker_bytes(dataset_bytes)
    by_cores = max(1, machine.cores // per_trial)
    by_memory = memory_capacity(machine, dataset_bytes)
    n = max(1, min(by_cores, by_memory, parallel_trials))
    limit = {by_cores: "cores", by_memory: "memory", parallel_trials: "the trials runnable at once"}[n] \
        if n in (by_cores, by_memory, parallel_trials) else "cores"
    why = (f"{machine.cores} usable cores, {per_trial} per {'convolutional' if conv else 'dense'}-network trial; "
           f"{machine.memory / 2**30:.1f} GiB available, ~{per_worker / 2**30:.1f} GiB per worker; "
           f"{parallel_trials} trials runnable at once; limited by {limit}")
    return Choice(n, why, max(1, machine.cores // n))
