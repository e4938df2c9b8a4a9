"""RabbitMQ away in the middle of training: no delivery attempt spent, the request succeeds.

A broker outage is not a failure of the message. Before, the handler's result could not
be published during the outage, the failure counted as an attempt ("requeue in"), the
ack was lost with the channel and the redelivery (one more delivery for the quorum queue)
was handled again from the start. Now the handler goes on, publishes once RabbitMQ is
back, and the redelivery is settled by the handling still in progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults.common import rabbitmq_down_mid_stage

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


async def test_rabbitmq_down_mid_training(
    private_rabbit: Any, db_url: str, pipeline_on: Any, simulator_server: Any, tmp_path: Path
) -> None:
    await rabbitmq_down_mid_stage(
        "training", 1, private_rabbit, db_url, pipeline_on, simulator_server, tmp_path
    )
