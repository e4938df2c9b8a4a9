"""Real servers for the whole session, fresh state for each test.

``servers`` starts a private RabbitMQ and PostgreSQL on free ports in a temporary
directory (or uses ``TEST_AMQP_URL`` / ``TEST_DATABASE_URL`` when set) and stops them
at the end. Each test gets a fresh migrated database cloned from a template and a
unique broker namespace (its own exchanges and queues).

Conftest files only define and register fixtures: what tests import (``Servers``,
``create_database``, ``delete_namespace``...) lives in ordinary modules under
``tests/plugins/`` (here: ``tests/plugins/servers.py``), and
``tests/unit/test_architecture.py`` checks that no module imports a conftest.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from localstack.servers import PostgresServer, RabbitServer
from shared import db
from shared.broker import Broker
from shared.settings import Settings
from tests.plugins.servers import (
    Servers,
    create_database,
    delete_namespace,
    drop_database,
    prepare_template,
    start_servers,
)

pytest_plugins = [
    "tests.plugins.simulator",
    "tests.plugins.datasets",
    "tests.plugins.roles",
    "tests.plugins.pipeline",
]


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    tmp = Path(tempfile.mkdtemp(prefix="chouette-test-"))
    started: list[PostgresServer | RabbitServer] = []
    try:
        found = start_servers(tmp, started)
        asyncio.run(prepare_template(found))
        yield found
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def db_url(servers: Servers) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = await create_database(servers, name)
    yield url
    await drop_database(servers, name)


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
