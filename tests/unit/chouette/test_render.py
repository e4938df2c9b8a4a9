"""Output helpers: progress parsing, bars, the --json object."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import uuid

import pytest

from chouette import render
from shared.request_state import Progress


def _request(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "request_id": uuid.UUID(int=1),
        "kind": "training",
        "status": "running",
        "stage": "fetching",
        "progress": "fetching 3/12",
        "progress_done": 3,
        "progress_total": 12,
        "error": None,
        "dataset_id": None,
        "model_id": None,
        "evaluation_id": None,
        "params": {},
        "created_at": dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
        "finished_at": None,
    }
    row.update(changes)
    return row


def test_fraction_comes_from_the_numbers_not_the_text() -> None:
    assert render.fraction({"progress_done": 12, "progress_total": 50}) == (12, 50)
    # Text alone is for people: it is never parsed back.
    assert render.fraction({"progress": "fetching 12/50"}) is None
    assert render.fraction({"progress_done": None, "progress_total": None}) is None


def test_progress_has_numbers_or_none() -> None:
    assert Progress("fetching", 12, 50).text == "fetching 12/50"
    assert Progress("fetching", 12, 50).fraction == (12, 50)
    assert Progress("loading model").text == "loading model"
    assert Progress("loading model").fraction is None
    with pytest.raises(ValueError, match="both"):
        Progress("fetching", 12)
    with pytest.raises(ValueError, match="out of range"):
        Progress("fetching", 51, 50)


def test_bar() -> None:
    assert render.bar(1, 4, width=8) == "[##......] 1/4"
    assert render.bar(0, 0, width=4) == "[....] 0/0"


def test_result_json_has_the_contract_fields() -> None:
    out = json.loads(render.dumps(render.result_json(_request(), None)))
    assert set(out) >= {"request_id", "status", "model_id", "dataset_id", "error", "evaluation"}
    assert out["request_id"] == str(uuid.UUID(int=1))
    assert out["evaluation"] is None


def test_plain_converts_database_values() -> None:
    value = {"a": decimal.Decimal("0.5"), "b": [dt.date(2024, 1, 2)], "c": uuid.UUID(int=2)}
    assert render.plain(value) == {"a": 0.5, "b": ["2024-01-02"], "c": str(uuid.UUID(int=2))}


def test_progress_view_appends_changes_when_not_a_terminal() -> None:
    stream = io.StringIO()
    view = render.ProgressView(stream)
    view.request(_request(), None, None)
    view.request(_request(), None, None)  # unchanged: not repeated
    view.request(_request(stage="training", progress=None, model_id=4), 3, None)
    view.epoch({"epoch": 1, "loss": 0.9, "accuracy": 0.5}, 3)
    view.close(_request(status="failed", stage="training"))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("fetching") and lines[0].endswith("3/12")
    assert lines[1] == "training   epoch [........................] 0/3"
    assert lines[2].endswith("1/3  loss 0.900 acc 0.500")
    assert lines[3] == "failed at training"


def test_table_aligns_columns() -> None:
    text = render.table([(1, "ResNet50", 0.5), (12, "ResNet152V2", None)], ("id", "net", "f1"))
    lines = text.splitlines()
    assert lines[0].split() == ["id", "net", "f1"]
    assert lines[3].split() == ["12", "ResNet152V2", "-"]


def test_durations_read_like_a_clock() -> None:
    assert render.duration(None) is None
    assert render.duration(decimal.Decimal("21.149")) == "21.1s"
    assert render.duration(185.9) == "3m05s"
    assert render.duration(7620) == "2h07m"
    table = render.requests_table([_request(architecture="ResNet50", seconds=65.0)])
    assert "1m05s" in table and "65.000" not in table


def _registry_row(model_id: int, test_f1: float | None, later_f1: float | None) -> dict:
    return {
        "model_id": model_id,
        "architecture": "ResNet50",
        "start_date": dt.date(2021, 4, 1),
        "end_date": dt.date(2021, 5, 31),
        "n_images": 147,
        "image_size": 64,
        "epochs": 3,
        "status": "trained",
        "dataset_id": 1,
        "eval_dataset_id": 1 if test_f1 is not None else None,
        "eval_split": "test" if test_f1 is not None else None,
        "macro_f1": None if test_f1 is None else decimal.Decimal(str(test_f1)),
        "accuracy": None,
        "n_evaluations": 2,
        "champion": False,
        "later_macro_f1": None if later_f1 is None else decimal.Decimal(str(later_f1)),
        "later_start_date": dt.date(2021, 6, 1),
        "later_end_date": dt.date(2021, 7, 31),
    }


def test_later_range_sentence_says_which_way_and_by_how_much() -> None:
    assert render.later_range_sentence(0.84, 0.72, "2021-06-01..2021-07-31") == (
        "later range 2021-06-01..2021-07-31 macro F1 0.720 is 0.120 below the test split's"
        " 0.840: photos of the training range flatter the test split"
    )
    above = render.later_range_sentence(0.70, 0.80)
    assert above is not None
    assert above.startswith("later range macro F1 0.800 is 0.100 above the test split's 0.700")
    assert render.later_range_sentence(0.84, 0.80) == (
        "later range macro F1 0.800 is within 0.05 of the test split's 0.840"
    )
    assert render.later_range_sentence(None, 0.8) is None
    assert render.later_range_sentence(0.8, None) is None


def test_a_gap_of_exactly_the_threshold_is_not_a_difference() -> None:
    assert not render.later_differs(0.80, 0.75)  # 0.05 despite float rounding
    assert render.later_differs(decimal.Decimal("0.8"), decimal.Decimal("0.749"))
    assert not render.later_differs(None, 0.1)


def test_registry_table_shows_the_later_figure_and_notes_big_gaps() -> None:
    text = render.registry_table(
        [
            _registry_row(1, 0.84, 0.72),
            _registry_row(2, 0.80, 0.78),
            _registry_row(3, None, 0.50),  # no test split figure: nothing to compare
            _registry_row(4, 0.60, None),
        ]
    )
    lines = text.splitlines()
    header = lines[0].split()
    assert header[header.index("macro_f1") + 1] == "later_f1"
    assert lines[2].split()[header.index("later_f1")] == "0.720"
    assert lines[5].split()[header.index("later_f1")] == "-"
    notes = lines[lines.index("") + 1 :]
    assert notes == [
        "later_f1: macro F1 on the model's most recent later date range (its training images"
        " left out)",
        "model 1: later range 2021-06-01..2021-07-31 macro F1 0.720 is 0.120 below the test"
        " split's 0.840: photos of the training range flatter the test split",
    ]


def test_registry_table_without_later_figures_is_the_table_alone() -> None:
    text = render.registry_table([_registry_row(4, 0.60, None)])
    assert len(text.splitlines()) == 3


def test_evaluation_says_how_many_training_images_were_left_out() -> None:
    ev = {
        "evaluation_id": 7,
        "model_id": 1,
        "dataset_id": 4,
        "split": "all",
        "accuracy": 0.7,
        "macro_f1": 0.68,
        "balanced_accuracy": 0.69,
        "n_images": 120,
        "n_excluded": 35,
        "class_names": ["vine", "ground", "grass"],
        "per_class": {},
        "confusion_matrix": [],
    }
    first = render.evaluation_text(ev).splitlines()[0]
    assert first.endswith("(all split, 120 images; 35 images of the training range left out)")
    assert render.evaluation_json(ev)["n_excluded"] == 35  # type: ignore[index]
    ev["n_excluded"] = 0
    assert render.evaluation_text(ev).splitlines()[0].endswith("(all split, 120 images)")


def test_text_from_the_api_cannot_drive_the_terminal() -> None:
    from chouette import queries
    from chouette.follow import event_text
    from chouette.render import printable, request_text, requests_table

    hostile = "listing failed: HTTP 502 \x1b[2J\x1b]0;owned\x07Bad\u202eGateway\r\nretry"
    assert printable(hostile) == (
        "listing failed: HTTP 502 \\x1b[2J\\x1b]0;owned\\x07Bad\\u202eGateway retry"
    )
    req = {
        "request_id": "7d0c2a9e-0000-0000-0000-000000000000", "kind": "training",
        "status": "failed", "stage": "fetching", "progress": "fetching 1/2\x1b[1A",
        "error": hostile, "params": {}, "dataset_id": None, "model_id": None,
        "evaluation_id": None, "created_at": None, "finished_at": None,
        "architecture": "ResNet50", "age_seconds": 1.0, "run_seconds": None,
    }  # fmt: skip
    shown = [
        request_text(req, None),
        requests_table([req]),
        event_text(queries.REQUESTS, req),
    ]
    for text in shown:
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, text
        assert "\r" not in text
