"""The arithmetic a run trains in (config.PRECISIONS), as Keras's dtype policies: float32, or
mixed_bfloat16 (bfloat16 compute on AMX units or tensor cores; float32 variables, so weights,
optimizer slots and BN's moving statistics stay float32, and BN normalises in float32). The output
layer is float32 in every kbn network (kbn.models), so the softmax and the loss are float32 too.
A policy is global in Keras and read when a layer is made: kbn sets it only while it makes layers
(`policy`), so a long-lived process (a sweep's worker) never carries one run's policy into the next."""

from __future__ import annotations

import contextlib

import keras


@contextlib.contextmanager
def policy(name):
    """Layers made inside take the dtype policy `name` (a policy name or a DTypePolicy); the one
    before comes back after, however the block ends."""
    before = keras.config.dtype_policy()
    if name == "float32":  # the protocol's plain arithmetic: Keras's default for its floatx (float64 where
        name = keras.config.floatx()  # a program set floatx float64, as the packed exactness test does)
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def describe(model: keras.Model, precision: str) -> dict:
    """What `model` computes in, read off its layers (config.json's `precision`): the policy asked
    for, the hidden layers' compute dtypes, the variables' dtypes and the output's dtype."""
    weighted = [layer for layer in model.layers if layer.weights]
    return {
        "policy": precision,
        "compute_dtypes": sorted({layer.compute_dtype for layer in weighted[:-1]}),
        "variable_dtypes": sorted({str(v.dtype) for v in model.weights}),
        "output_dtype": str(model.outputs[0].dtype),
    }
