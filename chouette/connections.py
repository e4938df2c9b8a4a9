"""The command line's connections: a PostgreSQL pool, a listener for ``LISTEN/NOTIFY``
and a RabbitMQ publisher, each bounded in time and turned into one line (``CommandFailed``)
when the server does not answer. Every command that talks to a server opens it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

import aiormq

from chouette.errors import CommandFailed
from chouette.follow import Listener
from chouette.submit import Publisher
from shared import db
from shared.broker import Broker
from shared.settings import Settings, redact_url

CONNECT_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def open_pool(settings: Settings, *, writes: bool = False) -> AsyncIterator[db.Pool]:
    """A small pool: as the CLI's role (``CLI_DATABASE_URL``) for a command that ``writes``,
    with pending migrations applied first under ``AUTO_MIGRATE`` (the CLI may be the first
    to touch a database); else as the read-only role (``READER_DATABASE_URL``), which never
    migrates."""
    dsn = settings.database_url_for("cli" if writes else "reader").get_secret_value()
    created: list[db.Pool] = []
    try:
        # No connection floor: while PostgreSQL is away, asyncpg would log a traceback per
        # attempt to restore it (`--wait` rides out an outage on a connection of its own).
        created.append(
            await asyncio.wait_for(db.create_pool(dsn, min_size=0, max_size=2), CONNECT_TIMEOUT_S)
        )
        await asyncio.wait_for(created[0].fetchval("SELECT 1"), CONNECT_TIMEOUT_S)  # connects
    except Exception as exc:
        for unused in created:
            await unused.close()
        raise CommandFailed(
            f"cannot connect to PostgreSQL at {redact_url(dsn)}: {exc}"
            " (is it running? `chouette services up` starts a local one)"
        ) from None
    pool = created[0]
    try:
        if writes:
            await db.migrate_if_asked(settings, pool, dsn)
        yield pool
    finally:
        await pool.close()


def open_listener(settings: Settings) -> contextlib.AbstractAsyncContextManager[Listener]:
    """A listener on a connection of its own as the read-only role, which it opens again
    after PostgreSQL went away (``--wait`` rides out an outage)."""
    dsn = settings.database_url_for("reader").get_secret_value()
    return Listener.open(functools.partial(db.connect, dsn))


@contextlib.asynccontextmanager
async def open_publisher(settings: Settings) -> AsyncIterator[Publisher]:

    url = settings.amqp_url_for("cli").get_secret_value()
    broker = Broker(
        url,
        namespace=settings.broker_namespace,
        delivery_limit=settings.broker_delivery_limit,
        heartbeat=settings.amqp_heartbeat,
        declare=settings.auto_migrate,
    )
    try:
        await asyncio.wait_for(broker.connect(), CONNECT_TIMEOUT_S)
    except BaseException as exc:
        # Ctrl-C too (a CancelledError): cancelled once connected (opening the channel,
        # declaring the queues), a robust connection left open goes on reconnecting, shrugs
        # off asyncio.run's last cancellation, and the process never exits.
        await close_within(broker, CLOSE_TIMEOUT_S)
        if not isinstance(exc, Exception):
            raise

        if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):  # connected, refused
            raise CommandFailed(
                f"RabbitMQ at {redact_url(url)} refused the pipeline's queues: {exc} (queues"
                " declared with other arguments, e.g. another BROKER_DELIVERY_LIMIT, than this"
                " configuration: align the setting, or delete the queues)"
            ) from None
        raise CommandFailed(
            f"cannot connect to RabbitMQ at {redact_url(url)}: {exc}"
            " (is it running? `chouette services up` starts a local one)"
        ) from None
    try:
        yield broker
    finally:
        await close_within(broker, CLOSE_TIMEOUT_S)


async def close_within(broker: Any, timeout_s: float) -> None:
    """Close the broker connection, giving up after ``timeout_s`` (a server that stopped
    answering must not hold a command, nor Ctrl-C, any longer)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(broker.close(), timeout_s)
