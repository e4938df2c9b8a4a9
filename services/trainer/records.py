"""What a training produces and reports, apart from the loop that produces it.

The store (``store.py``), the recorder and the handler use these types without importing
the training loop (and, through it, TensorFlow).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import keras

# What early stopping and the kept epoch follow: the validation accuracy (in inference mode,
# see Validator), or the training loss without a validation split. The kept epoch is the
# latest one within one validation image of the best accuracy seen: the learning rate
# decays to zero, so of two epochs that validate alike the later one has seen more of it,
# and on a validation split of a few images one image is noise (an early epoch that got
# lucky would otherwise be kept, and stop the training). The validation loss, by contrast,
# prefers the less confident early epochs.
MAXIMISED = frozenset({"val_accuracy"})


def monitor_of(n_val: int) -> str:
    return "val_accuracy" if n_val else "loss"


class TrainingAbandoned(Exception):
    """The stop flag was set (SIGTERM): leave the message unacked; it will be redelivered."""


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch (1-based), as written to ``training_epochs``."""

    epoch: int
    loss: float | None
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float | None
    seconds: float
    images: int

    def monitored(self, monitor: str) -> float:
        """``monitor``'s value as a number to minimise (an accuracy is negated)."""
        value = getattr(self, monitor)
        if value is None or not math.isfinite(value):
            return math.inf
        return -float(value) if monitor in MAXIMISED else float(value)


class Hooks(Protocol):
    """What the loop reports; called from the training thread, may block."""

    def restore(self, model: keras.Model, optimizer_variables: Sequence[Any], epoch: int) -> bool:
        """Load the checkpoint of ``epoch``; True when the optimizer state was restored."""

    def epoch_end(
        self,
        result: EpochResult,
        model: keras.Model,
        optimizer_variables: Sequence[Any],
        best_epoch: int,
    ) -> None:
        """Record the epoch and its checkpoint (keeping ``best_epoch``'s) in one commit."""

    def load_best(self, model: keras.Model, epoch: int) -> None:
        """Load the weights of ``epoch``'s checkpoint (to end on the best epoch)."""


@dataclass
class Outcome:
    model: keras.Model
    history: list[EpochResult]
    best_epoch: int
    stopped: str  # "epochs" | "early_stopping" | "time_limit"
    bn_momentum: float
    recalibrated_layers: int
    final_metrics: dict[str, float | int | str | None]
    class_weights: dict[int, float]
    # Where ``model`` may go back to (``Job.models``) once its weights are stored.
    model_key: Hashable | None = None
    reused: bool = False
    finish_seconds: float = 0.0  # BatchNorm re-estimation and the final validation

    @property
    def train_seconds(self) -> float:
        return float(sum(r.seconds for r in self.history))

    @property
    def images_per_second(self) -> float | None:
        seconds = self.train_seconds
        return sum(r.images for r in self.history) / seconds if seconds > 0 else None
