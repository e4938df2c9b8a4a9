"""Private RabbitMQ / PostgreSQL servers that a fault test may restart or reconfigure.

The session's servers are shared by every test; a test that restarts a server gets its
own, on free ports, and a :class:`Pipeline` wired to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from localstack.servers import PostgresServer, RabbitServer, free_port
from shared import db
from shared.broker import Broker
from shared.settings import Settings
from tests.plugins.pipeline import Pipeline


@pytest.fixture
def private_rabbit(tmp_path: Path) -> Iterator[Callable[..., RabbitServer]]:
    started: list[RabbitServer] = []

    def start(**config: Any) -> RabbitServer:
        server = RabbitServer(tmp_path / f"rabbit{len(started)}", port=free_port(), **config)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(
        tmp_path / "postgres", port=free_port(), database="faults", superuser=True, durable=False
    )
    server.start()
    yield server
    server.stop()


PipelineFactory = Callable[..., AbstractAsyncContextManager[Pipeline]]


@pytest.fixture
def pipeline_on(simulator_server: Any, namespace: str, tmp_path: Path) -> PipelineFactory:
    """``async with pipeline_on(amqp_url, database_url) as p:`` — services on given servers."""

    @asynccontextmanager
    async def make(
        amqp_url: str, database_url: str, *, delivery_limit: int = 5, **env: str
    ) -> AsyncIterator[Pipeline]:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            amqp_url=amqp_url,
            database_url=database_url,
            broker_namespace=namespace,
            broker_delivery_limit=delivery_limit,
        )
        pool = await db.create_pool(database_url, max_size=4)
        await db.migrate(pool)
        broker = Broker(amqp_url, namespace=namespace, delivery_limit=delivery_limit)
        await broker.connect()
        simulator_server.reset()
        pipeline = Pipeline(settings, pool, broker, tmp_path, env={**simulator_server.env(), **env})
        try:
            yield pipeline
        finally:
            pipeline.stop_all()
            await broker.close()
            await pool.close()
            simulator_server.reset()

    return make
