"""The API's ASGI middlewares, around the FastAPI app: :class:`RequestLog` outside,
then :class:`BodyLimit`, then :class:`CountConcurrency`.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware``
runs every request through a task group and memory streams, which costs more than the
rest of a small ``/predict`` call on a busy CPU (``bench/bench_serve.py``).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.batching import Concurrency
from services.api.metrics import Metrics
from shared import logs

logger = logging.getLogger("services.api")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def error_response(
    status: int, message: str, request_id: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Every error the API answers: ``{"error", "request_id"}``, never a stack trace."""
    return JSONResponse(
        {"error": message, "request_id": request_id},
        status_code=status,
        headers=None if headers is None else dict(headers),
    )


def request_id_of(scope: Scope) -> str:
    """The id :class:`RequestLog` gave this request (``-`` outside it)."""
    return str(scope.get("state", {}).get("request_id", "-"))


class _Proxy:
    """The wrapped FastAPI app's attributes (``routes``, ``state``...) stay reachable."""

    app: ASGIApp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


class RequestLog(_Proxy):
    """For every HTTP request: a request id (``X-Request-ID`` echoed when it is a plain
    token, else a new one) in the response headers and in the log context; one log line
    with method, path, status and milliseconds; the Prometheus counter and latency
    histogram by route. An exception nobody handled becomes a JSON 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                responded = True
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        with logs.request_context(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # Starlette's last handler has answered and logged it already; else here.
                if not responded:
                    logger.exception("%s %s failed", scope["method"], scope["path"])
                    response = error_response(500, "internal error (see the server log)",
                                              request_id)  # fmt: skip
                    await response(scope, receive, send_with_id)
            seconds = time.perf_counter() - started
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(path).observe(seconds)
            logger.info("%s %s %d %.1f ms", scope["method"], scope["path"], status,
                        seconds * 1000)  # fmt: skip


class BodyLimit(_Proxy):
    """A body above ``max_bytes`` gets a 413 before it is read (by its Content-Length), or
    as soon as the bytes read pass the limit (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        exceeded = started = False

        async def limited() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    # The app sees the client go away; the client gets the 413 (below).
                    exceeded = True
                    return {"type": "http.disconnect"}
            return event

        async def guarded(event: Message) -> None:
            nonlocal started
            if exceeded and not started:
                started = True
                await self._refuse(scope, receive, send)
            if exceeded:
                return  # whatever the app answers to the disconnect
            started = started or event["type"] == "http.response.start"
            await send(event)

        await self.app(scope, limited, guarded)
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body above {self.max_bytes} bytes (API_MAX_UPLOAD_BYTES)"
        await error_response(413, message, request_id_of(scope))(scope, receive, send)


class CountConcurrency(_Proxy):
    """Counts the requests to ``path`` open at once
    (:class:`~services.api.batching.Concurrency`): the batch an idle model waits for."""

    def __init__(self, app: ASGIApp, concurrency: Concurrency, path: str) -> None:
        self.app = app
        self.concurrency = concurrency
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        self.concurrency.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.concurrency.exit()
