"""Real servers for the whole session, fresh state for each test.

``servers`` starts a private RabbitMQ and PostgreSQL on free ports in a temporary
directory (or uses ``TEST_AMQP_URL`` / ``TEST_DATABASE_URL`` when set) and stops them
at the end. Each test gets a fresh migrated database cloned from a template and a
unique broker namespace (its own exchanges and queues).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from localstack.servers import PostgresServer, RabbitServer, free_port
from shared import db
from shared.broker import BINDINGS, Broker
from shared.settings import Settings
from tests.plugins.roles import BROKER_NAMESPACES, broker_users

pytest_plugins = [
    "tests.plugins.simulator",
    "tests.plugins.datasets",
    "tests.plugins.roles",
    "tests.plugins.pipeline",
]

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


def _start_servers(tmp: Path) -> tuple[Servers, list[object]]:
    amqp, database = os.environ.get("TEST_AMQP_URL"), os.environ.get("TEST_DATABASE_URL")
    started: list[object] = []
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
    return Servers(amqp, database, users), started


async def _prepare_template(servers: Servers) -> None:
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


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    tmp = Path(tempfile.mkdtemp(prefix="chouette-test-"))
    started: list[object] = []
    try:
        found, started = _start_servers(tmp)
        asyncio.run(_prepare_template(found))
        yield found
    finally:
        for server in reversed(started):
            server.stop()  # type: ignore[attr-defined]
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def db_url(servers: Servers) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    yield servers.database(name)
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[db.Pool]:
    p = await db.create_pool(db_url, max_size=10)
    yield p
    await p.close()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(servers: Servers, db_url: str, namespace: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        amqp_url=servers.amqp_url,
        database_url=db_url,
        broker_namespace=namespace,
        broker_delivery_limit=3,
    )


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    b = Broker(
        settings.amqp_url.get_secret_value(),
        namespace=settings.broker_namespace,
        delivery_limit=settings.broker_delivery_limit,
        retry_backoff=0.05,
    )
    await b.connect()
    yield b
    await b.close()
    await delete_namespace(settings.amqp_url.get_secret_value(), settings.broker_namespace)


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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Expose each phase's report on the item (``item.rep_call``) for fixtures' teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
