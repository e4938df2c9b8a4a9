"""The life cycle every service shares: settings → logging → pool → migrations → broker →
consume until SIGTERM → close. A service's ``__main__`` only builds its handler.

    async def main() -> None:
        await serve(FETCHER, (TrainingRequested, EvaluationRequested), make_handler, prefetch=4)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from shared import db, logs, shutdown, startup
from shared.broker import Broker, FailureSink, Handler
from shared.messages import Message
from shared.outages import OutageWait
from shared.settings import Settings, redact_url

logger = logging.getLogger(__name__)

T = TypeVar("T")

HandlerFactory = Callable[[db.Pool, Broker, Settings], Awaitable[Handler] | Handler]


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (the services' event loop).

    uvloop (libuv, Cython) roughly halves the CPU asyncio spends per socket operation;
    it matters in the fetcher, whose speed on a small machine is bound by the CPU per
    download (``bench/bench_fetch.py``). Same semantics; ``CHOUETTE_EVENT_LOOP=asyncio``
    (environment) keeps the standard loop, e.g. to rule it out when debugging.
    """
    # Until the consumer's own handler is installed, SIGTERM exits cleanly (shared.startup).
    previous = startup.exit_on_sigterm()
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(main)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop, or asyncio's own with ``CHOUETTE_EVENT_LOOP=asyncio`` or no uvloop."""
    if os.environ.get("CHOUETTE_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - a dependency; optional on exotic platforms
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def make_failure_sink(pool: db.Pool) -> FailureSink:
    async def on_failure(
        *,
        request_id: uuid.UUID | None,
        queue: str,
        stage: str,
        error: str,
        body: bytes | None,
    ) -> None:
        await db.record_failure(
            pool, request_id=request_id, queue=queue, stage=stage, error=error, body=body
        )

    return on_failure


async def connect_with_retry(
    connect: Callable[[], Awaitable[object]], what: str, *, attempts: int = 30, delay: float = 1.0
) -> object:
    """Services may start before RabbitMQ/PostgreSQL are ready: wait for them a while."""
    for attempt in range(1, attempts + 1):
        try:
            return await connect()
        except Exception as exc:
            if attempt == attempts:
                raise
            logger.warning("%s not reachable yet (%s); retry %d/%d", what, exc, attempt, attempts)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def close_pool(pool: db.Pool, within: float) -> None:
    """Close the pool gracefully, or terminate its connections after ``within`` seconds
    (a connection still held by an abandoned handler, a server that does not answer)."""
    try:
        async with asyncio.timeout(within):
            await pool.close()
    except TimeoutError:
        logger.warning("the database pool did not close in %.0fs; terminated", within)
        pool.terminate()


async def serve(
    queue: str,
    accepts: tuple[type[Message], ...],
    make_handler: HandlerFactory,
    *,
    prefetch: int = 1,
    grace: float = 10.0,
    settings: Settings | None = None,
) -> None:
    """Run one consumer until SIGTERM/SIGINT; exits cleanly (in-flight work is redelivered).

    A signal while it is still starting (connecting, migrating) cancels the start-up where
    it is, closes what is open and returns: ``shared.startup``'s handler, which raises
    ``SystemExit`` wherever the main thread is, would be swallowed if it fired inside a
    library's callback on the event loop (seen: asyncpg's authentication), and the service
    would go on running.
    """
    loop = asyncio.get_running_loop()
    starting = asyncio.current_task()
    signalled = False

    def stop_starting() -> None:
        nonlocal signalled
        signalled = True
        shutdown.arm(grace + shutdown.CLOSE_SECONDS)
        if starting is not None:
            starting.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_starting)
    try:
        await _serve(
            queue, accepts, make_handler, prefetch=prefetch, grace=grace, settings=settings
        )
    except asyncio.CancelledError:
        if not signalled:
            raise
        logger.info("%s: signal received while starting; stopped", queue)


async def _serve(
    queue: str,
    accepts: tuple[type[Message], ...],
    make_handler: HandlerFactory,
    *,
    prefetch: int,
    grace: float,
    settings: Settings | None,
) -> None:
    settings = settings or Settings()
    logs.configure(settings.log_level, settings.log_format)
    database_url = settings.database_url_for(queue)
    amqp_url = settings.amqp_url_for(queue)
    dsn = database_url.get_secret_value()
    logger.info(
        "starting %s: broker %s, database %s",
        queue,
        redact_url(amqp_url),
        redact_url(database_url),
    )
    pool: db.Pool = await connect_with_retry(lambda: db.create_pool(dsn), "PostgreSQL")  # type: ignore[assignment]
    try:
        await db.migrate_if_asked(settings, pool, dsn)
        broker = Broker(
            amqp_url.get_secret_value(),
            namespace=settings.broker_namespace,
            delivery_limit=settings.broker_delivery_limit,
            heartbeat=settings.amqp_heartbeat,
            max_body_bytes=settings.broker_max_body_bytes,
            declare=settings.auto_migrate,
            outage_wait_seconds=settings.broker_outage_wait_seconds,
        )
        broker.outage = OutageWait(
            probe=lambda: pool.fetchval("SELECT 1"),
            max_seconds=settings.database_outage_wait_seconds,
        )
        await connect_with_retry(broker.connect, "RabbitMQ")
        try:
            handler = make_handler(pool, broker, settings)
            if asyncio.iscoroutine(handler):
                handler = await handler
            on_failure = make_failure_sink(pool)
            await broker.consume(
                queue,
                accepts,
                handler,  # type: ignore[arg-type]
                on_failure=on_failure,
                prefetch=prefetch,
            )
            await broker.consume_dead_letters(queue, on_failure=on_failure)
            logger.info("%s ready", queue)
            await broker.run_until_signalled(grace)
        finally:
            await broker.close(within=shutdown.CLOSE_SECONDS / 2)
    finally:
        await close_pool(pool, within=shutdown.CLOSE_SECONDS / 2)
    logger.info("%s stopped", queue)
