"""Private RabbitMQ / PostgreSQL servers that a fault test may restart or reconfigure.

The session's servers are shared by every test; a test that restarts a server gets its
own, on free ports, and a :class:`~tests.plugins.pipeline.Pipeline` wired to it
(``pipeline_on``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localstack.servers import PostgresServer, RabbitServer, free_port
from tests.plugins.pipeline import PipelineFactory


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


@pytest.fixture
def pipeline_on(simulator_server: Any, namespace: str, tmp_path: Path) -> PipelineFactory:
    """``async with pipeline_on(amqp_url, database_url) as p:`` — services on given servers."""
    return PipelineFactory(simulator_server, namespace, tmp_path)
