"""PostgreSQL away for a minute in the middle of training (why and what before:
test_database_outage_fetching.py; one file per stage so the workers overlap them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localstack.servers import PostgresServer
from tests.faults.common import postgres_down_for_a_minute_mid_stage

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


async def test_postgres_down_for_a_minute_mid_training(
    private_postgres: PostgresServer,
    servers: Any,
    pipeline_on: Any,
    simulator_server: Any,
    tmp_path: Path,
) -> None:
    await postgres_down_for_a_minute_mid_stage(
        "training", private_postgres, servers, pipeline_on, simulator_server, tmp_path
    )
