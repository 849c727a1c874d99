"""kbn.core.clock: a run's seconds apart (training, evaluation, compilation), the estimate of compilation
inside Keras's own calls, and JAX's compile events counted for the process."""

import pytest

from kbn.core.clock import FirstCalls, RunClock, process_compile_seconds


def test_training_seconds_leave_compilation_out_and_the_eta_learns_from_them():
    clock = RunClock()
    clock.add("train", 10.0, 8.0)  # a first period of 100 steps: 8 s compiling, 2 s training
    clock.add("evaluate", 3.0, 2.5)
    assert (clock.train, clock.evaluate, clock.compile) == (2.0, 0.5, 10.5)
    # 900 steps and 9 evaluations to go: 0.02 s a step, 0.5 s an evaluation; not 13 s per period
    assert clock.left(100, 1000, 1, 9) == pytest.approx(900 * 0.02 + 9 * 0.5)


def test_a_late_estimate_comes_out_of_the_seconds_already_counted():
    clock = RunClock()
    clock.add("train", 5.0, 0.0)  # compilation not known yet
    clock.add("train", 1.0, 4.0)  # now it is: 4 s of the first period were compiling
    assert (clock.train, clock.compile) == (2.0, 4.0)


def test_first_calls_count_a_cold_calls_excess_over_the_warm_pace():
    calls = FirstCalls()
    calls.call("train", 6.0, 50, {128})  # compiles, then trains 50 steps
    assert calls.seconds("train") == 0.0  # no warm call yet to say what 50 steps cost
    calls.call("train", 1.0, 50, {128})
    calls.call("train", 1.2, 50, {128})
    assert calls.seconds("train") == pytest.approx(6.0 - 50 * 0.022)
    calls.call("train", 2.0, 10, {128, 32})  # the short last batch is a new shape: compiled again
    assert calls.seconds("train") == pytest.approx(6.0 - 50 * 0.022 + 2.0 - 10 * 0.022)
    calls.call("test", 3.0, 10, {1000})  # each kind its own shapes and pace
    assert calls.seconds("test") == 0.0 and calls.seconds("train") == pytest.approx(4.9 + 1.78)


def test_first_calls_say_what_each_period_compiled_once_it_is_known():
    """A row written after period 0 cannot know its cold call's compilation yet; asked again later
    (`upto`), the estimate lands in the period that compiled, not in the one that learnt it."""
    calls = FirstCalls()
    calls.period = 0
    calls.call("train", 6.0, 50, {128})
    calls.call("test", 2.0, 5, {1000})
    assert calls.seconds("train", upto=0) == 0.0
    calls.period = 1
    calls.call("train", 1.0, 50, {128})
    calls.call("test", 0.5, 5, {1000})
    assert calls.seconds("train", upto=0) == pytest.approx(5.0) == calls.seconds("train", upto=1)
    assert calls.seconds("test", upto=0) == pytest.approx(1.5)
    calls.period = 2
    calls.call("train", 2.0, 10, {128, 32})  # a new shape in period 2 compiles there
    assert calls.seconds("train", upto=1) == pytest.approx(5.0)
    assert calls.seconds("train", upto=2) == pytest.approx(5.0 + 2.0 - 10 * 0.02) == calls.seconds("train")


def test_process_compile_seconds_follow_what_jax_compiles():
    import time

    import jax
    import jax.numpy as jnp

    before = process_compile_seconds()
    t0 = time.perf_counter()
    jax.jit(lambda a: jnp.sin(a) @ jnp.cos(a).T + 17.25).lower(jnp.ones((64, 64))).compile()
    took = time.perf_counter() - t0
    spent = process_compile_seconds() - before
    assert 0 < spent <= took
