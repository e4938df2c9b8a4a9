"""Classification metrics that hold up on small, imbalanced test sets (pure numpy).

Everything is derived from one confusion matrix (rows = truth, columns = prediction, in
the model's class order). A class with no test image is *absent*: its recall and F1 are
undefined, so they are reported as ``None`` and left out of the macro averages instead
of dragging them down as zeros. A present class that the model never predicts has
precision 0 (sklearn's ``zero_division=0``): the model failed it, which must show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# Same clipping as Keras' categorical cross-entropy, so the two losses agree.
EPSILON = 1e-7


@dataclass(frozen=True)
class ClassMetrics:
    """One class's row of the report; ``None`` where the class is absent from the truth."""

    precision: float | None
    recall: float | None
    f1: float | None
    support: int  # test images of this class
    predicted: int  # images the model assigned to this class
    absent: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "predicted": self.predicted,
            "absent": self.absent,
        }


@dataclass(frozen=True)
class Metrics:
    class_names: tuple[str, ...]
    n_images: int
    accuracy: float
    macro_f1: float
    balanced_accuracy: float
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]
    loss: float | None = None

    @property
    def absent_classes(self) -> tuple[str, ...]:
        return tuple(name for name, m in self.per_class.items() if m.absent)

    def per_class_json(self) -> dict[str, dict[str, Any]]:
        return {name: m.as_json() for name, m in self.per_class.items()}


def confusion_matrix(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, n_classes: int
) -> npt.NDArray[np.int64]:
    """Counts ``[truth, prediction]`` for integer labels in ``range(n_classes)``."""
    truth = np.asarray(y_true, dtype=np.int64).ravel()
    pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"{truth.size} true labels but {pred.size} predictions")
    for name, labels in (("true", truth), ("predicted", pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{name} labels must lie in [0, {n_classes})")
    flat = np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def cross_entropy(y_true: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Mean of ``-log p(true class)`` with probabilities clipped to ``[EPSILON, 1]``."""
    truth = np.asarray(y_true, dtype=np.int64).ravel()
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != truth.size:
        raise ValueError(f"probabilities must be ({truth.size}, n_classes), got {probs.shape}")
    picked = np.clip(probs[np.arange(truth.size), truth], EPSILON, 1.0)
    return float(-np.log(picked).mean())


def from_confusion(
    matrix: npt.ArrayLike, class_names: Sequence[str], *, loss: float | None = None
) -> Metrics:
    """The full report from a confusion matrix (rows = truth, columns = prediction)."""
    cm = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix must be {n}x{n} for {n} classes, got {cm.shape}")
    total = int(cm.sum())
    if total == 0:
        raise ValueError("no images to evaluate")

    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    per_class: dict[str, ClassMetrics] = {}
    f1s: list[float] = []
    recalls: list[float] = []
    for i, name in enumerate(class_names):
        if support[i] == 0:
            per_class[name] = ClassMetrics(
                None, None, None, support=0, predicted=int(predicted[i]), absent=True
            )
            continue
        precision = float(tp[i] / predicted[i]) if predicted[i] else 0.0
        recall = float(tp[i] / support[i])
        # 2TP / (2TP + FP + FN): equal to 2PR/(P+R), and defined when P = R = 0.
        f1 = float(2 * tp[i] / (support[i] + predicted[i]))
        per_class[name] = ClassMetrics(
            precision,
            recall,
            f1,
            support=int(support[i]),
            predicted=int(predicted[i]),
            absent=False,
        )
        f1s.append(f1)
        recalls.append(recall)

    return Metrics(
        class_names=tuple(class_names),
        n_images=total,
        accuracy=float(tp.sum() / total),
        macro_f1=float(np.mean(f1s)),
        balanced_accuracy=float(np.mean(recalls)),
        per_class=per_class,
        confusion_matrix=cm.tolist(),
        loss=loss,
    )


def evaluate(
    y_true: npt.ArrayLike, probabilities: npt.ArrayLike, class_names: Sequence[str]
) -> Metrics:
    """Metrics of predicted class probabilities ``(n_images, n_classes)`` against labels."""
    probs = np.asarray(probabilities)
    truth = np.asarray(y_true, dtype=np.int64).ravel()
    if probs.ndim != 2 or probs.shape != (truth.size, len(class_names)):
        raise ValueError(
            f"probabilities must be ({truth.size}, {len(class_names)}), got {probs.shape}"
        )
    predicted = probs.argmax(axis=1)
    cm = confusion_matrix(truth, predicted, len(class_names))
    return from_confusion(cm, class_names, loss=cross_entropy(truth, probs))
