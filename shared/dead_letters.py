"""What a message in a ``<queue>.dead`` queue says about its request.

Two kinds of messages reach a dead-letter queue:

- those the broker layer rejected itself (an invalid body, a ``PermanentError``, the
  delivery limit reached inside a handler): their failure row and ``RequestFailed`` were
  written before the rejection (RabbitMQ's reason ``rejected``);
- those RabbitMQ dead-lettered on its own, at the delivery limit (reason
  ``delivery_limit``): every delivery ended without an acknowledgement, because the
  consumer crashed, was killed (out of memory) or lost its connection each time. No one
  recorded anything: the request would stay ``running`` for good.

Each service consumes its own queue's dead letters (``Broker.consume_dead_letters``) and
records the second kind as a failure; this module reads the headers, as plain data.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REJECTED = "rejected"


@dataclass(frozen=True)
class DeadLetter:
    request_id: uuid.UUID | None
    reason: str  # RabbitMQ's: rejected, delivery_limit, expired, maxlen, …
    deliveries: int | None

    @property
    def recorded(self) -> bool:
        """Whether the failure was recorded before the message was dead-lettered."""
        return self.reason == REJECTED

    def error(self, queue: str, delivery_limit: int) -> str:
        if self.deliveries:
            times = f" after {self.deliveries} deliveries"
        else:  # RabbitMQ does not always say (3.10 does not, for a quorum queue)
            times = f" at its delivery limit ({delivery_limit})"
        if self.reason == "delivery_limit":
            why = (
                "no delivery was settled: the consumer crashed, was killed (out of memory?)"
                " or lost its connection each time"
            )
        else:
            why = "it was never handled"
        return f"dead-lettered by RabbitMQ from the {queue} queue{times} ({self.reason}): {why}"


def read(
    headers: Mapping[str, Any], correlation_id: str | None, body: bytes, max_body_bytes: int
) -> DeadLetter:
    """The dead letter's request (correlation id, else the body's ``request_id``), the
    reason RabbitMQ gives in ``x-death`` and how many times it was delivered."""
    deaths = headers.get("x-death") or []
    first = deaths[0] if deaths and isinstance(deaths[0], Mapping) else {}
    reason = _text(headers.get("x-first-death-reason") or first.get("reason")) or "unknown"
    deliveries = _int(headers.get("x-delivery-count"))
    if deliveries is not None:
        deliveries += 1  # the count of redeliveries: the first delivery is not in it
    return DeadLetter(_request_id(correlation_id, body, max_body_bytes), reason, deliveries)


def _request_id(correlation_id: str | None, body: bytes, max_body_bytes: int) -> uuid.UUID | None:
    for candidate in (correlation_id, _body_request_id(body, max_body_bytes)):
        try:
            if candidate:
                return uuid.UUID(candidate)
        except ValueError:
            continue
    return None


def _body_request_id(body: bytes, max_body_bytes: int) -> str | None:
    if len(body) > max_body_bytes:
        return None
    try:
        data = json.loads(body)
    except Exception:  # any body at all may be dead-lettered
        return None
    value = data.get("request_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value) if value is not None else None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
