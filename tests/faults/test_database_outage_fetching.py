"""PostgreSQL away for a minute in the middle of fetching: the request still succeeds.

An unreachable database is not a failure of the message. Before, the fetcher's retries
(0.5, 1, 2 s…) spent all deliveries in seconds, "could not record the failure;
requeueing", RabbitMQ dead-lettered the message and the request stayed ``running`` for
good, and `chouette train --wait` died with asyncpg tracebacks (exit 1) while the request
went on. Now the service waits for the database and handles the same delivery again, and
`--wait` says so in one line and keeps following. One file per stage: `make test`
spreads files over its workers, so the three outages no longer run one after another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localstack.servers import PostgresServer
from tests.faults.common import postgres_down_for_a_minute_mid_stage

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


async def test_postgres_down_for_a_minute_mid_fetching(
    private_postgres: PostgresServer,
    servers: Any,
    pipeline_on: Any,
    simulator_server: Any,
    tmp_path: Path,
) -> None:
    await postgres_down_for_a_minute_mid_stage(
        "fetching", private_postgres, servers, pipeline_on, simulator_server, tmp_path
    )
