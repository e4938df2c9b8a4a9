"""The API's ASGI middlewares on a bare app, called as a server would (no HTTP): the
request id, one log line, the metrics, and a JSON 500 for an exception nobody handled."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from services.api.batching import Concurrency
from services.api.metrics import Metrics
from services.api.middleware import BodyLimit, CountConcurrency, RequestLog


async def call(
    app: Any,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    path: str = "/x",
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
        "state": {},
    }
    sent: list[Message] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    names = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], names, content


async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("secret internals")


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_an_unhandled_exception_is_a_json_500_without_its_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    with caplog.at_level(logging.INFO, logger="services.api"):
        status, headers, body = await call(RequestLog(crashing, metrics))
    answer = json.loads(body)
    assert status == 500 and answer["error"] == "internal error (see the server log)"
    assert answer["request_id"] == headers["x-request-id"]
    assert "secret internals" not in body.decode()
    failed = [r for r in caplog.records if r.exc_info]
    assert len(failed) == 1 and "secret internals" in str((failed[0].exc_info or ())[1:])
    assert any(r.getMessage().startswith("POST /x 500 ") for r in caplog.records)
    assert 'chouette_api_requests_total{method="POST",route="unmatched",status="500"} 1.0' in (
        metrics.text().decode()
    )


async def test_the_request_id_given_is_echoed_and_a_bad_one_replaced() -> None:
    app = RequestLog(ok, Metrics())
    _, headers, _ = await call(app, headers=[(b"x-request-id", b"abc-1")])
    assert headers["x-request-id"] == "abc-1"
    _, headers, _ = await call(app, headers=[(b"x-request-id", b"no spaces allowed")])
    assert headers["x-request-id"] != "no spaces allowed" and len(headers["x-request-id"]) == 16


async def test_a_declared_body_over_the_limit_is_refused_with_the_request_id() -> None:
    status, headers, body = await call(RequestLog(BodyLimit(ok, 10), Metrics()), b"x" * 11)
    answer = json.loads(body)
    assert status == 413 and "API_MAX_UPLOAD_BYTES" in answer["error"]
    assert answer["request_id"] == headers["x-request-id"]


async def test_predict_requests_are_counted_while_open() -> None:
    concurrency = Concurrency()
    seen: list[int] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(concurrency.open)
        await ok(scope, receive, send)

    app = CountConcurrency(route, concurrency, "/predict")
    await call(app, path="/predict")
    await call(app, path="/models")
    assert seen == [1, 0] and concurrency.open == 0
    with pytest.raises(RuntimeError):
        await call(CountConcurrency(crashing, concurrency, "/predict"), path="/predict")
    assert concurrency.open == 0 and concurrency.expected() == 1


async def test_an_exception_in_a_route_is_answered_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the real app: a route that fails (here: its resources were never opened)
    gets the JSON 500 from the app's last handler, and its trace is logged once."""
    from contextlib import asynccontextmanager

    from services.api.app import create_app
    from shared.settings import ApiSettings

    @asynccontextmanager
    async def never_opened(*_: object) -> Any:
        raise AssertionError("no lifespan in this test")
        yield

    app = create_app(ApiSettings(_env_file=None), never_opened, {"version": "test"})  # type: ignore[call-arg]
    with caplog.at_level(logging.INFO, logger="services.api"):
        status, headers, body = await call(app, path="/models", method="GET")
    answer = json.loads(body)
    assert status == 500 and answer["error"] == "internal error (see the server log)"
    assert answer["request_id"] == headers["x-request-id"]
    assert "Traceback" not in body.decode()
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert any(r.getMessage().startswith("GET /models 500 ") for r in caplog.records)
