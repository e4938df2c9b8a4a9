"""Known answers, computed by hand, for the evaluator's metrics."""

import math

import numpy as np
import pytest

from services.evaluator import metrics

CLASSES = ("vine", "ground", "grass")

# rows = truth, columns = prediction
#            vine ground grass
KNOWN = [
    [5, 1, 0],  # vine   (6)
    [2, 3, 1],  # ground (6)
    [0, 0, 4],  # grass  (4)
]


def test_known_answer_confusion_matrix() -> None:
    m = metrics.from_confusion(KNOWN, CLASSES)

    assert m.n_images == 16
    assert m.accuracy == pytest.approx(12 / 16)
    vine, ground, grass = (m.per_class[c] for c in CLASSES)
    # vine: TP 5, FP 2, FN 1
    assert (vine.precision, vine.recall, vine.f1) == pytest.approx((5 / 7, 5 / 6, 10 / 13))
    # ground: TP 3, FP 1, FN 3
    assert (ground.precision, ground.recall, ground.f1) == pytest.approx((3 / 4, 1 / 2, 6 / 10))
    # grass: TP 4, FP 1, FN 0
    assert (grass.precision, grass.recall, grass.f1) == pytest.approx((4 / 5, 1.0, 8 / 9))
    assert [vine.support, ground.support, grass.support] == [6, 6, 4]
    assert [vine.predicted, ground.predicted, grass.predicted] == [7, 4, 5]
    assert m.macro_f1 == pytest.approx((10 / 13 + 6 / 10 + 8 / 9) / 3)
    assert m.balanced_accuracy == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert m.absent_classes == ()
    assert m.confusion_matrix == KNOWN


def test_evaluate_builds_the_matrix_rows_truth_columns_prediction() -> None:
    # Image 0 is a vine predicted as grass: it must land in row vine, column grass.
    y_true = [0, 1, 2, 2]
    probs = np.array(
        [
            [0.1, 0.2, 0.7],
            [0.1, 0.8, 0.1],
            [0.2, 0.2, 0.6],
            [0.5, 0.4, 0.1],
        ]
    )
    m = metrics.evaluate(y_true, probs, CLASSES)
    assert m.confusion_matrix == [[0, 0, 1], [0, 1, 0], [1, 0, 1]]
    assert m.loss == pytest.approx(
        -(math.log(0.1) + math.log(0.8) + math.log(0.6) + math.log(0.1)) / 4
    )


def test_absent_class_is_reported_absent_and_left_out_of_macro_averages() -> None:
    # No grass among the test images, but the model predicted grass once (a vine).
    cm = [
        [3, 0, 1],
        [1, 2, 0],
        [0, 0, 0],
    ]
    m = metrics.from_confusion(cm, CLASSES)

    grass = m.per_class["grass"]
    assert grass.absent
    assert (grass.precision, grass.recall, grass.f1, grass.support) == (None, None, None, 0)
    assert grass.predicted == 1
    assert m.absent_classes == ("grass",)
    # vine: TP 3, FP 1, FN 1 → F1 6/8; ground: TP 2, FP 0, FN 1 → F1 4/5
    assert m.macro_f1 == pytest.approx((6 / 8 + 4 / 5) / 2)
    assert m.balanced_accuracy == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.per_class_json()["grass"] == {
        "precision": None,
        "recall": None,
        "f1": None,
        "support": 0,
        "predicted": 1,
        "absent": True,
    }


def test_present_class_never_predicted_scores_zero_not_absent() -> None:
    cm = [
        [4, 0, 0],
        [2, 0, 0],
        [0, 0, 3],
    ]
    m = metrics.from_confusion(cm, CLASSES)
    ground = m.per_class["ground"]
    assert not ground.absent
    assert (ground.precision, ground.recall, ground.f1) == (0.0, 0.0, 0.0)
    assert m.macro_f1 == pytest.approx((8 / 10 + 0 + 1) / 3)


def test_cross_entropy_clips_zero_probabilities() -> None:
    loss = metrics.cross_entropy([0], [[0.0, 1.0]])
    assert loss == pytest.approx(-math.log(metrics.EPSILON))


def test_empty_and_malformed_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="no images"):
        metrics.from_confusion(np.zeros((3, 3)), CLASSES)
    with pytest.raises(ValueError, match="3x3"):
        metrics.from_confusion([[1, 0], [0, 1]], CLASSES)
    with pytest.raises(ValueError, match="labels"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="probabilities"):
        metrics.evaluate([0, 1], np.ones((2, 2)), CLASSES)
