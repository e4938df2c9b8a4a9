"""Message contracts: validation shared by the CLI and the consumers."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from pydantic import ValidationError

from shared.choices import ARCHITECTURES
from shared.errors import InvalidMessage
from shared.messages import (
    DatasetSpec,
    EvaluationDatasetReady,
    EvaluationRequested,
    ModelEvaluated,
    TrainingDatasetReady,
    TrainingParams,
    TrainingRequested,
    first_error,
    parse_message,
)

RID = uuid.uuid4()


def spec(**kw: object) -> DatasetSpec:
    return DatasetSpec(**{"start_date": "2021-05-01", "end_date": "2021-06-01", **kw})


def test_six_architectures() -> None:
    assert set(ARCHITECTURES) == {
        "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"architecture": "ResNet18"}, "architecture", "ResNet50"),
        ({"epochs": 0}, "epochs", "greater than 0"),
        ({"batch_size": -1}, "batch_size", "greater than 0"),
        ({"test_fraction": 1.0}, "test_fraction", "less than 1"),
        ({"val_fraction": 0}, "val_fraction", "greater than 0"),
        ({"image_size": 8}, "image_size", "32"),
        ({"image_size": 5000}, "image_size", "1024"),
        ({"optimizer": "lbfgs"}, "optimizer", "adam"),
        ({"test_fraction": 0.6, "val_fraction": 0.5}, "request", "below 1"),
    ],
)
def test_training_params_rejected_with_field_name(kwargs: dict, field: str, text: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainingParams(**{"architecture": "ResNet50", **kwargs})
    line = first_error(info.value)
    assert line.startswith(f"{field}:")
    assert text in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"tags": "vine,weeds"}, "tags", "vine"),
        ({"tags": ""}, "tags", "at least one tag"),
        ({"start_date": "2021-02-30"}, "start_date", "date"),
        ({"end_date": "yesterday"}, "end_date", "date"),
        ({"start_date": "2021-07-01"}, "request", "after end_date"),
    ],
)
def test_dataset_spec_rejected_with_field_name(kwargs: dict, field: str, text: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**kwargs)
    line = first_error(info.value)
    assert line.startswith(f"{field}:"), line
    assert text in line


def test_tags_are_canonical_so_equal_filters_are_equal() -> None:
    assert spec(tags="grass, vine").tags == ("vine", "grass")
    assert spec(tags=["vine", "grass"]) == spec(tags="grass,vine")
    assert spec().tags == ("vine", "ground", "grass")


def test_messages_are_frozen() -> None:
    msg = EvaluationRequested(request_id=RID, model_id=3)
    with pytest.raises(ValidationError):
        msg.model_id = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "message",
    [
        TrainingRequested(
            request_id=RID, dataset=spec(), training=TrainingParams(architecture="ResNet50V2")
        ),
        EvaluationRequested(request_id=RID, model_id=1),
        EvaluationRequested(request_id=RID, model_id=1, dataset=spec()),
        EvaluationDatasetReady(request_id=RID, dataset_id=2, model_id=1, split="all"),
        TrainingDatasetReady(
            request_id=RID, dataset_id=2, training=TrainingParams(architecture="ResNet50")
        ),
        ModelEvaluated(
            request_id=RID, model_id=1, dataset_id=2, evaluation_id=3, accuracy=0.5, macro_f1=0.4
        ),
    ],
)
def test_round_trip_through_json(message: object) -> None:
    parsed = parse_message(message.to_json())  # type: ignore[attr-defined]
    assert parsed == message
    assert type(parsed) is type(message)


def test_each_dataset_ready_type_routes_to_its_consumer() -> None:
    evaluation = EvaluationDatasetReady(request_id=RID, dataset_id=2, model_id=1)
    training = TrainingDatasetReady(
        request_id=RID, dataset_id=2, training=TrainingParams(architecture="ResNet50")
    )
    assert evaluation.routing_key == "dataset.ready.evaluation"
    assert training.routing_key == "dataset.ready.training"
    with pytest.raises(ValidationError, match="training"):
        TrainingDatasetReady(request_id=RID, dataset_id=2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="model_id"):
        EvaluationDatasetReady(request_id=RID, dataset_id=2)  # type: ignore[call-arg]


def legacy_dataset_ready(**fields: object) -> bytes:
    """A body of the single ``DatasetReady`` type this project used before (``purpose``)."""
    body = {"schema_version": 1, "type": "DatasetReady", "request_id": str(RID), "dataset_id": 2}
    return json.dumps({**body, **fields}).encode()


def test_a_legacy_dataset_ready_parses_as_the_type_of_its_purpose() -> None:
    params = TrainingParams(architecture="ResNet50").model_dump(mode="json")
    training = parse_message(
        legacy_dataset_ready(purpose="training", training=params, split="test")
    )
    assert isinstance(training, TrainingDatasetReady)
    assert training.training.architecture == "ResNet50"
    evaluation = parse_message(
        legacy_dataset_ready(purpose="evaluation", model_id=5, split="all", training=None)
    )
    assert isinstance(evaluation, EvaluationDatasetReady)
    assert (evaluation.model_id, evaluation.split) == (5, "all")
    with pytest.raises(InvalidMessage, match="invalid DatasetReady"):
        parse_message(legacy_dataset_ready(purpose="painting", model_id=5))
    with pytest.raises(InvalidMessage, match="model_id"):
        parse_message(legacy_dataset_ready(purpose="evaluation"))


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"{oops", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"schema_version": 2, "type": "ModelReady"}', "unsupported schema_version 2"),
        (b'{"type": "ModelReady"}', "unsupported schema_version None"),
        (b'{"schema_version": 1, "type": "Nope", "request_id": "x"}', "invalid Nope"),
        (
            json.dumps(
                {
                    "schema_version": 1,
                    "type": "ModelReady",
                    "request_id": str(RID),
                    "model_id": -1,
                    "dataset_id": 1,
                }
            ).encode(),
            "model_id",
        ),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 2000, "nested too deeply"),
        (b'{"a":' * 10_000, "nested too deeply"),
        (b'{"schema_version": 1, "type": "ModelReady", "x": ' + b"[" * 5000, "nested too deeply"),
    ],
)
def test_bad_bodies_raise_invalid_message(body: bytes, text: str) -> None:
    with pytest.raises(InvalidMessage, match=text):
        parse_message(body)


def test_an_error_quoting_a_huge_value_stays_short() -> None:
    body = b'{"schema_version": "' + b"9" * 1_000_000 + b'"}'
    with pytest.raises(InvalidMessage, match="unsupported schema_version") as caught:
        parse_message(body)
    assert len(str(caught.value)) < 400


def test_dates_are_real_dates() -> None:
    assert spec().start_date == dt.date(2021, 5, 1)


def test_a_failure_text_is_cut_to_a_bounded_length() -> None:
    import uuid

    from shared.messages import MAX_ERROR_CHARS, RequestFailed

    long = RequestFailed(request_id=uuid.uuid4(), stage="fetching", error="x" * 1_000_000)
    assert len(long.error) == MAX_ERROR_CHARS
    assert long.error.endswith("more characters)")
    short = RequestFailed(request_id=uuid.uuid4(), stage="fetching", error="HTTP 502")
    assert short.error == "HTTP 502"
