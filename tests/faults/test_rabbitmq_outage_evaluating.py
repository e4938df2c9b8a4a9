"""RabbitMQ away in the middle of evaluating (why and what before:
test_rabbitmq_outage_fetching.py): no delivery attempt spent, the request succeeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults.common import rabbitmq_down_mid_stage

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


async def test_rabbitmq_down_mid_evaluating(
    private_rabbit: Any, db_url: str, pipeline_on: Any, simulator_server: Any, tmp_path: Path
) -> None:
    await rabbitmq_down_mid_stage(
        "evaluating", 1, private_rabbit, db_url, pipeline_on, simulator_server, tmp_path
    )
