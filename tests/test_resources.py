import pytest

from kbn.sweep import resources
from kbn.sweep.resources import Machine, choose_workers

GIB = 2**30
FASHION = 70_000 * 28 * 28 * 4  # float32 bytes of Fashion-MNIST's three splits


@pytest.mark.parametrize("machine,conv,expect", [
    (Machine(2, 20 * GIB), False, 2),  # this machine: a dense trial keeps one core busy
    (Machine(2, 20 * GIB), True, 1),  # a CNN trial on TensorFlow keeps both busy
    (Machine(16, 64 * GIB), False, 16),
    (Machine(16, 64 * GIB), True, 8),
    (Machine(32, 64 * GIB), False, 32),
    (Machine(32, 64 * GIB), True, 16),
    (Machine(32, 8 * GIB), False, 5),  # memory-bound: 6 GiB usable / ~1.2 GiB per worker
    (Machine(8, 1 * GIB), False, 1),  # never fewer than one
    (Machine(32, 64 * GIB, gpu=True), False, 1),  # a GPU: one process, trials packed
])
def test_the_sizing_rule_by_simulation(machine, conv, expect):
    choice = choose_workers(machine, conv, FASHION, parallel_trials=120)
    assert choice.workers == expect, choice.why
    assert choice.why  # the first line of a sweep says why


def test_a_small_sweep_gets_no_more_workers_than_it_can_use():
    choice = choose_workers(Machine(32, 64 * GIB), False, FASHION, parallel_trials=3)
    assert choice.workers == 3 and "trials runnable at once" in choice.why
    assert choice.cores_each == 10  # each worker pinned to its share of the cores


def test_this_machine_is_read_from_affinity_and_meminfo():
    m = resources.this_machine()
    assert 1 <= m.cores <= len(__import__("os").sched_getaffinity(0)) and m.memory > 0.1 * GIB
