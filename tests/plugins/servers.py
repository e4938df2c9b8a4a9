"""The test servers and what tests do on them: databases, broker namespaces, queues.

``tests/conftest.py`` starts the session's servers (:func:`start_servers`, then
:func:`prepare_template`) and defines the fixtures; everything here is an ordinary helper that
tests and harnesses import:

- :class:`Servers`: the session's RabbitMQ and PostgreSQL (``servers`` fixture);
- :func:`create_database` / :func:`drop_database`: a migrated database of its own, cloned
  from :data:`TEMPLATE_DB` (the one way tests get a database on the session's PostgreSQL);
- :func:`declare_topology`, :func:`delete_namespace`, :func:`drain_queue`: a broker
  namespace's exchanges and queues, declared, removed, emptied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from localstack.servers import PostgresServer, RabbitServer, free_port
from shared import db
from shared.broker import BINDINGS, Broker
from tests.plugins.roles import BROKER_NAMESPACES, broker_users

# The migrated database every test database is cloned from.
TEMPLATE_DB = "chouette_template"


@dataclass(frozen=True)
class Servers:
    amqp_url: str
    database_url: str  # an administrative database; tests use db_url
    # The broker was started here, with the per-process users of tests/plugins/roles.py.
    broker_users: bool = False

    @property
    def users_amqp_url(self) -> str | None:
        """The broker's URL when it has those users (for ``role_env``)."""
        return self.amqp_url if self.broker_users else None

    def database(self, name: str) -> str:
        parts = urlsplit(self.database_url)
        return urlunsplit(parts._replace(path=f"/{name}"))


def start_servers(tmp: Path, started: list[PostgresServer | RabbitServer]) -> Servers:
    """The session's servers: ``TEST_AMQP_URL`` / ``TEST_DATABASE_URL`` when set, otherwise
    private ones under ``tmp`` on free ports (added to ``started`` as soon as they run, for
    the caller to stop)."""
    amqp, database = os.environ.get("TEST_AMQP_URL"), os.environ.get("TEST_DATABASE_URL")
    if not database:
        postgres = PostgresServer(
            tmp / "postgres",
            port=free_port(),
            database="chouette_admin",
            superuser=True,
            durable=False,
        )
        postgres.start()
        started.append(postgres)
        database = postgres.url
    users = False
    if not amqp:
        rabbit = RabbitServer(
            tmp / "rabbitmq",
            port=free_port(),
            consumer_timeout_ms=3_600_000,
            users=broker_users(),
            namespace_pattern=BROKER_NAMESPACES,
        )
        rabbit.start()
        started.append(rabbit)
        amqp, users = rabbit.url, True
    return Servers(amqp, database, users)


async def prepare_template(servers: Servers) -> None:
    """(Re)create :data:`TEMPLATE_DB` and migrate it."""
    con = await asyncpg.connect(servers.database_url)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await con.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await con.close()
    con = await asyncpg.connect(servers.database(TEMPLATE_DB))
    try:
        await db.migrate(con)
    finally:
        await con.close()


async def create_database(servers: Servers, name: str) -> str:
    """A new migrated database ``name`` (a clone of :data:`TEMPLATE_DB`); its URL."""
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    return servers.database(name)


async def drop_database(servers: Servers, name: str) -> None:
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def declare_topology(amqp_url: str, namespace: str, *, delivery_limit: int) -> None:
    """Declare ``namespace``'s exchanges and queues, as the administrator does."""
    broker = Broker(amqp_url, namespace=namespace, delivery_limit=delivery_limit)
    await broker.connect()
    await broker.close()


async def delete_namespace(amqp_url: str, namespace: str) -> None:
    """Remove a test's exchanges and queues so the session's broker stays small."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        for queue in BINDINGS:
            for name in (f"{namespace}.{queue}", f"{namespace}.{queue}.dead"):
                channel = await connection.channel()
                try:
                    await channel.queue_delete(name)
                except Exception:
                    pass
        channel = await connection.channel()
        for name in (namespace, f"{namespace}.dlx"):
            try:
                await channel.exchange_delete(name)
            except Exception:
                channel = await connection.channel()
    finally:
        await connection.close()


async def drain_queue(amqp_url: str, queue: str) -> list[AbstractIncomingMessage]:
    """Every message waiting in ``queue`` (acked: the queue ends empty)."""
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        amqp_queue = await channel.get_queue(queue, ensure=True)
        messages = []
        while (message := await amqp_queue.get(fail=False, no_ack=True)) is not None:
            messages.append(message)
        return messages
    finally:
        await connection.close()
