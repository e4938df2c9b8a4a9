"""The fused optimizers compute what Keras's own do, and fall back where they must."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from services.trainer.optimizers import FusedAdam, FusedSGD
from services.trainer.training import make_optimizer


def run(optimizer: Any, steps: int = 25) -> list[np.ndarray]:
    """``steps`` updates of two weights with the same seeded gradients, in a graph."""
    rng = np.random.default_rng(0)
    weights = [
        keras.Variable(rng.normal(size=shape).astype(np.float32)) for shape in ((5, 4), (3,))
    ]
    optimizer.build(weights)
    apply = tf.function(lambda grads: optimizer.apply(grads, weights))
    grads = np.random.default_rng(1)
    for _ in range(steps):
        apply([tf.constant(grads.normal(size=w.shape).astype(np.float32)) for w in weights])
    return [w.numpy() for w in weights]


@pytest.mark.parametrize(
    ("fused", "reference"),
    [
        (lambda: FusedAdam(0.01), lambda: keras.optimizers.Adam(0.01)),
        (lambda: FusedSGD(0.01, momentum=0.9), lambda: keras.optimizers.SGD(0.01, momentum=0.9)),
    ],
    ids=["adam", "sgd-momentum"],
)
def test_fused_updates_match_keras(fused: Any, reference: Any) -> None:
    start = run(reference(), steps=0)
    expected, got = run(reference()), run(fused())
    for e, g, s in zip(expected, got, start, strict=True):
        assert np.abs(e - s).max() > 0.01  # the weights did move
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_fused_kernels_are_in_the_traced_step() -> None:
    weights = [keras.Variable(np.ones((2, 2), np.float32))]
    optimizer = FusedAdam(0.01)
    optimizer.build(weights)
    graph = (
        tf.function(lambda g: optimizer.apply(g, weights))
        .get_concrete_function([tf.TensorSpec((2, 2), tf.float32)])
        .graph
    )
    assert "ResourceApplyAdam" in {op.type for op in graph.get_operations()}


@pytest.mark.parametrize(
    "pair",
    [
        (FusedAdam(0.01, amsgrad=True), keras.optimizers.Adam(0.01, amsgrad=True)),
        (FusedSGD(0.01, momentum=0.9, nesterov=True), keras.optimizers.SGD(0.01, 0.9, True)),
        (FusedSGD(0.01), keras.optimizers.SGD(0.01)),
    ],
    ids=["amsgrad", "nesterov", "no-momentum"],
)
def test_variants_without_a_fused_kernel_fall_back_to_keras(pair: tuple[Any, Any]) -> None:
    for g, e in zip(run(pair[0]), run(pair[1]), strict=True):
        np.testing.assert_array_equal(g, e)


def test_the_trainer_uses_them() -> None:
    assert isinstance(make_optimizer("adam", 1e-3), FusedAdam)
    assert isinstance(make_optimizer("sgd", 1e-3), FusedSGD)
