"""Reading a dead letter's headers: which request, why, and whether it is recorded yet."""

from __future__ import annotations

import json
import uuid

from shared.dead_letters import read

RID = uuid.uuid4()


def test_a_message_rejected_by_the_broker_layer_is_already_recorded() -> None:
    letter = read({"x-first-death-reason": "rejected"}, str(RID), b"{}", 1024)
    assert letter.recorded
    assert letter.request_id == RID


def test_the_delivery_limit_is_not_recorded_and_says_why() -> None:
    headers = {"x-death": [{"reason": b"delivery_limit", "count": 1, "queue": "ns.trainer"}]}
    letter = read(headers, str(RID), b"{}", 1024)
    assert not letter.recorded
    error = letter.error("trainer", 5)
    assert "dead-lettered by RabbitMQ from the trainer queue at its delivery limit (5)" in error
    assert "delivery_limit" in error and "crashed" in error
    counted = read({**headers, "x-delivery-count": 4}, str(RID), b"{}", 1024)
    assert "after 5 deliveries" in counted.error("trainer", 5)


def test_the_request_id_comes_from_the_body_when_the_correlation_id_is_missing() -> None:
    body = json.dumps({"request_id": str(RID)}).encode()
    assert read({}, None, body, 1024).request_id == RID
    assert read({}, "not-a-uuid", body, 1024).request_id == RID


def test_any_body_at_all_is_read_without_error() -> None:
    for body in (b"[" * 5000, b"\xff\xfe", b"[1]", b'{"request_id": 7}', b"x" * 5000):
        letter = read({}, None, body, 1024)
        assert letter.request_id is None
        assert letter.reason == "unknown"
