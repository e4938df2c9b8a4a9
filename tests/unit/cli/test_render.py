"""Output helpers: progress parsing, bars, the --json object."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import uuid

from shared.cli import render


def _request(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "request_id": uuid.UUID(int=1),
        "kind": "training",
        "status": "running",
        "stage": "fetching",
        "progress": "fetching 3/12",
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


def test_fraction_and_bar() -> None:
    assert render.fraction("fetching 12/50") == (12, 50)
    assert render.fraction("fetching: listing images") is None
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
