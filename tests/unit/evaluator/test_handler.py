"""The parts of the handler and store that need no servers."""

import uuid

import numpy as np
import pytest

from services.evaluator import handler, store
from shared.broker import EVALUATOR, read_body
from shared.errors import InvalidMessage
from shared.messages import EvaluationDatasetReady, ModelReady, TrainingDatasetReady, TrainingParams

RID = uuid.uuid4()


def test_model_ready_targets_the_models_test_split() -> None:
    msg = ModelReady(request_id=RID, model_id=3, dataset_id=7)
    assert handler.target_of(msg) == handler.Target(3, 7, "test")


def test_dataset_ready_for_evaluation_targets_its_split() -> None:
    msg = EvaluationDatasetReady(request_id=RID, dataset_id=9, model_id=3, split="all")
    assert handler.target_of(msg) == handler.Target(3, 9, "all")


def test_the_evaluator_queue_refuses_a_training_dataset_as_invalid() -> None:
    msg = TrainingDatasetReady(
        request_id=RID,
        dataset_id=9,
        training=TrainingParams(architecture="ResNet50"),
    )
    accepts = (ModelReady, EvaluationDatasetReady)  # what services/evaluator consumes
    with pytest.raises(InvalidMessage, match="accepts ModelReady, EvaluationDatasetReady"):
        read_body(msg.to_json(), accepts, EVALUATOR, max_bytes=1 << 20)


def test_class_set_is_sorted_and_comma_joined() -> None:
    assert store.class_set(["vine", "ground", "grass"]) == "grass,ground,vine"


@pytest.mark.parametrize(
    ("challenger", "champion", "margin", "expected"),
    [
        (0.81, 0.80, 0.01, True),  # exactly the margin, despite float rounding
        (0.805, 0.80, 0.01, False),
        (0.90, 0.80, 0.01, True),
        (0.80, 0.80, 0.0, False),  # a tie never replaces the champion
        (0.8001, 0.80, 0.0, True),
    ],
)
def test_promotion_needs_the_margin(
    challenger: float, champion: float, margin: float, expected: bool
) -> None:
    assert store.beats(challenger, champion, margin) is expected


def test_prediction_records_carry_probabilities_by_class_name() -> None:
    refs = [store.ImageRef("a" * 64, "grass"), store.ImageRef("b" * 64, "vine")]
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], np.float32)
    records = store._prediction_records(5, refs, probs, ("vine", "ground", "grass"))
    assert records[0][:4] == (5, "a" * 64, "grass", "grass")
    assert records[1][:4] == (5, "b" * 64, "vine", "vine")
    assert records[0][4] == pytest.approx({"vine": 0.1, "ground": 0.2, "grass": 0.7})
