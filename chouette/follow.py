"""Following requests live through Postgres ``LISTEN/NOTIFY`` (no polling loop).

The schema's triggers notify ``chouette_requests`` (request rows), ``chouette_epochs``
(per-epoch metrics) and ``chouette_evaluations``. A :class:`Listener` subscribes *before*
the request is published, and every notification that concerns the request makes us
re-read its row, so the row in Postgres stays the single source of truth and a missed or
truncated payload costs nothing. A rare safety re-read (``RECHECK_S``) covers a dropped
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO, TypeVar

import asyncpg

from chouette import queries
from chouette.render import ProgressView, epoch_metrics, fmt, printable, requests_table, short_id
from shared import backoff
from shared.request_state import FINAL

RECHECK_S = 30.0
# While PostgreSQL is unreachable, a follower tries to reconnect this often (at most).
RECONNECT_MAX_S = 10.0
Event = tuple[str, dict[str, Any]]
T = TypeVar("T")
Connect = Callable[[], Awaitable[asyncpg.Connection]]

# What an unreachable or restarting PostgreSQL raises on a connection: not a failure of
# the request, which goes on in the services.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
RECONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TimeoutError)


class Listener:
    """LISTEN on the pipeline's channels; notifications queue up as ``(channel, payload)``.

    With ``connect``, the listener owns its connection and can open a new one after
    PostgreSQL went away (:meth:`reconnect`)."""

    def __init__(
        self,
        con: asyncpg.Connection,
        channels: tuple[str, ...] = queries.CHANNELS,
        *,
        connect: Connect | None = None,
    ):
        self.con = con
        self.channels = channels
        self.connect = connect
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, connect: Connect) -> AsyncIterator[Listener]:
        """A listener on a connection of its own, closed at the end (whichever it is then)."""
        listener = cls(await connect(), connect=connect)
        try:
            async with listener:
                yield listener
        finally:
            with contextlib.suppress(Exception):
                await listener.con.close(timeout=2)

    async def reconnect(self, note: Callable[[str], None], deadline: float | None) -> None:
        """Wait for PostgreSQL (backoff), then LISTEN again on a new connection. ``note``
        gets one line when the outage starts. Raises ``TimeoutError`` past ``deadline``."""
        if self.connect is None:
            raise ConnectionError("the database connection was lost")
        note("chouette: PostgreSQL unreachable; still following (the request goes on)")
        with contextlib.suppress(Exception):
            self.con.terminate()
        loop = asyncio.get_running_loop()
        for delay in backoff.delays(0.5, RECONNECT_MAX_S):
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError("PostgreSQL unreachable until the timeout")
            try:
                con = await asyncio.wait_for(self.connect(), 10)
            except RECONNECT_ERRORS:
                pause = delay if deadline is None else min(delay, deadline - loop.time())
                await asyncio.sleep(max(0.0, pause))
                continue
            self.con = con
            await self.__aenter__()
            return

    def _on_notify(self, _con: object, _pid: int, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            data = {}
        self.events.put_nowait((channel, data))

    async def __aenter__(self) -> Listener:
        for channel in self.channels:
            await self.con.add_listener(channel, self._on_notify)
        return self

    async def __aexit__(self, *exc: object) -> None:
        # The connection may already be gone (cancelled at shutdown): nothing to undo then.
        with contextlib.suppress(Exception):
            for channel in self.channels:
                await self.con.remove_listener(channel, self._on_notify)

    async def next(self, within_s: float) -> Event | None:
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the result when the
        # event and a cancellation (Ctrl-C) arrive together, and the cancellation is lost.
        try:
            async with asyncio.timeout(within_s):
                return await self.events.get()
        except TimeoutError:
            return None


def _concerns(channel: str, data: dict[str, Any], request_id: str, model_id: Any) -> bool:
    if channel == queries.EPOCHS:
        return model_id is not None and data.get("model_id") == model_id
    return str(data.get("request_id")) == request_id


async def follow(
    listener: Listener,
    request_id: uuid.UUID,
    view: ProgressView,
    *,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Show progress until the request succeeds or fails; return its final row.

    Raises ``TimeoutError`` after ``timeout_s`` seconds. When PostgreSQL goes away it says
    so in one line, reconnects (a listener with ``connect``) and goes on following.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    while True:
        try:
            return await _follow(listener, request_id, view, deadline, timeout_s)
        except CONNECTION_ERRORS:
            if listener.connect is None:
                raise
            await listener.reconnect(view.note, deadline)


async def with_reconnect(
    listener: Listener,
    view: ProgressView,
    read: Callable[[asyncpg.Connection], Awaitable[T]],
    within_s: float | None = None,
) -> T:
    """``read(listener.con)``, reconnecting (for up to ``within_s``) when PostgreSQL is away."""
    loop = asyncio.get_running_loop()
    deadline = None if within_s is None else loop.time() + within_s
    while True:
        try:
            return await read(listener.con)
        except CONNECTION_ERRORS:
            if listener.connect is None:
                raise
            await listener.reconnect(view.note, deadline)


async def _follow(
    listener: Listener,
    request_id: uuid.UUID,
    view: ProgressView,
    deadline: float | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    con = listener.con
    loop = asyncio.get_running_loop()
    req = await queries.request(con, request_id)
    if req is None:
        raise LookupError(f"no request {request_id}")
    epoch_total: int | None = None
    last_epoch: dict[str, Any] | None = None
    while True:
        if req["model_id"] is not None and epoch_total is None:
            epoch_total = (req["params"].get("training") or {}).get("epochs") or (
                await queries.model_epoch_total(con, req["model_id"])
            )
            rows = await queries.epochs(con, req["model_id"])
            last_epoch = rows[-1] if rows else None
        view.request(req, epoch_total, last_epoch)
        if req["status"] in FINAL:
            view.close(req)
            return req
        wait = RECHECK_S
        if deadline is not None:
            wait = min(wait, deadline - loop.time())
            if wait <= 0:
                raise TimeoutError(f"request {request_id} still {req['stage']} after {timeout_s}s")
        event = await listener.next(wait)
        if event is not None:
            channel, data = event
            if not _concerns(channel, data, str(request_id), req["model_id"]):
                continue
            if channel == queries.EPOCHS:
                rows = await queries.epochs(con, req["model_id"])
                last_epoch = rows[-1] if rows else last_epoch
                view.epoch(last_epoch, epoch_total)
                continue  # the request row changes come with their own notifications
        req = await queries.request(con, request_id) or req


async def watch(
    con: asyncpg.Connection,
    out: TextIO,
    *,
    stop: asyncio.Event | None = None,
    recent: int = 10,
) -> None:
    """Print the recent requests, then one line per event until ``stop`` is set."""
    stop = stop or asyncio.Event()
    epoch_totals: dict[int, int | None] = {}
    shown: dict[Any, str] = {}  # the last line of each request: a repeat says nothing new
    async with Listener(con) as listener:
        rows = await queries.recent_requests(con, recent)
        out.write(requests_table(reversed(rows)) + "\n\nwatching (Ctrl-C to stop)\n")
        out.flush()
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.create_task(listener.events.get())
                done, _ = await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                channel, data = getter.result()
                model_id = data.get("model_id")
                known = model_id in epoch_totals
                if channel == queries.EPOCHS and isinstance(model_id, int) and not known:
                    epoch_totals[model_id] = await queries.model_epoch_total(con, model_id)
                text = event_text(channel, data, epoch_totals)
                key = data.get("request_id") if channel == queries.REQUESTS else None
                if key is not None and shown.get(key) == text:
                    continue
                if key is not None:
                    shown[key] = text
                out.write(f"{dt.datetime.now():%H:%M:%S} {text}\n")
                out.flush()
        finally:
            stopped.cancel()


def event_text(
    channel: str, data: dict[str, Any], epoch_totals: dict[int, int | None] | None = None
) -> str:
    """One notification as a line of ``chouette watch`` (without its time)."""
    if channel == queries.REQUESTS:
        text = (
            f"request    {short_id(data.get('request_id'))}  {data.get('status'):<9}"
            f" {data.get('stage'):<10} {fmt(data.get('progress'))}"
        )
        if data.get("error"):
            text += f"  error: {printable(str(data['error']))}"
    elif channel == queries.EPOCHS:
        total = (epoch_totals or {}).get(data.get("model_id", -1))
        epoch = f"{data.get('epoch')}/{total}" if total else str(data.get("epoch"))
        text = f"epoch      model {data.get('model_id')}  {epoch}  {epoch_metrics(data)}"
    else:
        text = (
            f"evaluation {data.get('evaluation_id')}  model {data.get('model_id')}"
            f"  accuracy {fmt(data.get('accuracy'))}  macro_f1 {fmt(data.get('macro_f1'))}"
        )
    return text


def stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGINT/SIGTERM; returns the function that restores the handlers."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def restore() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return restore
