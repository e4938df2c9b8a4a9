"""Keras optimizers whose per-variable update is one fused TensorFlow op.

Keras 3 writes Adam's update of each weight as ~20 small ops (casts, powers, assigns). A
ResNet50 has 214 trainable weights, so every training step runs ~4,000 tiny ops, and the
first request of a network traces them all. TensorFlow's fused kernels
(``ResourceApplyAdam``, ``ResourceApplyKerasMomentum``, the ones Keras 2 used) do the same
arithmetic in one op per weight: on 2 CPU cores a ResNet50 at 32 px trains ~10 % more
images/s and the first epoch of a new network (its trace) takes ~35 % less time
(``bench/bench_optimizer.py``, README "Benchmarks"). Same variables, same
checkpoints, same results up to float rounding (``tests/unit/trainer/test_optimizers.py``).

The fused path is taken on one replica (CPU, one GPU); with several replicas, and for
AMSGrad or Nesterov, the classes fall back to Keras's own update.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


def _one_replica(optimizer: Any) -> bool:
    strategy = getattr(optimizer, "_distribution_strategy", None)
    return strategy is None or strategy.num_replicas_in_sync == 1


def _handle(variable: Any) -> Any:
    """The resource handle of a Keras variable or of the tf.Variable inside one."""
    return variable.value.handle if isinstance(variable, keras.Variable) else variable.handle


class FusedAdam(keras.optimizers.Adam):  # type: ignore[misc]
    """``keras.optimizers.Adam`` with ``ResourceApplyAdam`` as its update."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self.amsgrad or not _one_replica(self):
            return super().update_step(gradient, variable, learning_rate)  # type: ignore[no-any-return]
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
            use_locking=False,
        )
        return None


class FusedSGD(keras.optimizers.SGD):  # type: ignore[misc]
    """``keras.optimizers.SGD`` with momentum, with ``ResourceApplyKerasMomentum``."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self.momentum == 0 or self.nesterov or not _one_replica(self):
            return super().update_step(gradient, variable, learning_rate)  # type: ignore[no-any-return]
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable),
            accum=_handle(self.momentums[self._get_variable_index(variable)]),
            lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype),
            use_locking=False,
            use_nesterov=False,
        )
        return None
