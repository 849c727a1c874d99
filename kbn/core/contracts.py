"""What kbn asks of a researcher's own components, as `typing.Protocol`s a type checker reads
(`kbn.NetworkBuilder`, `kbn.OptimizerFactory`, `kbn.NormLayerClass`), and the same contract checked
when an import string is resolved (`unfit`): a component that kbn could not call the way it calls
its own is refused in one line that names the call, before anything trains.
It must not import Keras at load (the annotations name it for type checkers only).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import keras


@runtime_checkable
class NetworkBuilder(Protocol):
    """`arch = "package.module:builder"`: kbn calls `builder(input_shape, num_classes, norm=norm)`, with
    `activation=` (and `depth=`, `width=` where a run overrides them) when set; it returns a built
    keras.Model on `keras.Input(input_shape)` that ends in Dense(num_classes, softmax) and places its
    norms after each linear map with kbn.models.dense_block or norm_layer (checked on the built model).
    A working example: examples/your_own/mine.py's residual_mlp."""

    def __call__(self, input_shape: tuple[int, ...], num_classes: int, norm: str,
                 activation: str = "relu") -> keras.Model: ...


@runtime_checkable
class OptimizerFactory(Protocol):
    """`optimizer = "package.module:Name"`: a keras.optimizers.Optimizer class (kbn calls
    `Name(learning_rate=lr)`) or a factory kbn calls as `factory(lr)`; either way the optimizer it
    returns uses `lr` (checked). `kbn_family = "plain"` on it counts it with SGD in the findings.
    A working example: examples/your_own/mine.py's SignSGD."""

    def __call__(self, learning_rate: float, /) -> keras.optimizers.Optimizer: ...


@runtime_checkable
class NormLayerClass(Protocol):
    """`norm = "package.module:Layer"`: a keras.layers.Layer class kbn makes as `Layer(name=name)` for
    each norm position (after a Dense or a Conv, before the nonlinearity)."""

    def __call__(self, *, name: str) -> keras.layers.Layer: ...


# How kbn calls each contract: positional placeholders, keyword placeholders, and the call as said
_CALLS = {NetworkBuilder: (("input_shape", "num_classes"), ("norm",), "builder(input_shape, num_classes, norm=...)"),
          NormLayerClass: ((), ("name",), "Layer(name=...)")}


def unfit(obj, contract) -> str | None:
    """Why kbn cannot call `obj` as `contract` says it calls one (its signature does not take that
    call), or None. A class is read through its constructor; an object without a readable signature
    (a builtin) passes: its own call will say."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if contract is OptimizerFactory:
        args, kwargs, call = ((), ("learning_rate",), "Name(learning_rate=lr)") if inspect.isclass(obj) else \
            (("lr",), (), "factory(lr)")
    else:
        args, kwargs, call = _CALLS[contract]
    try:
        sig.bind(*args, **{k: k for k in kwargs})
    except TypeError as e:
        return f"takes {sig}, and kbn calls it as {call} ({e}); see kbn.{contract.__name__}"
    return None
