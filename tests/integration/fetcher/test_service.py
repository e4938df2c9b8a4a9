"""``python -m services.fetcher`` as a process: wiring, the published event, a clean stop."""

from __future__ import annotations

import signal

import pytest

from shared.broker import TRAINER
from shared.messages import TrainingDatasetReady, parse_message
from tests.plugins.pipeline import Pipeline
from tests.plugins.simulator import SimulatorHandle

pytestmark = pytest.mark.integration


async def test_the_service_fetches_publishes_and_stops_cleanly(
    pipeline: Pipeline, simulator_server: SimulatorHandle
) -> None:
    broker = pipeline.broker
    assert broker.connection is not None
    channel = await broker.connection.channel()
    trainer_queue = await channel.get_queue(broker.queue_name(TRAINER), ensure=True)

    pipeline.start("fetcher", LOG_LEVEL="DEBUG")
    request_id = await pipeline.submit_training("2021-06-01", "2021-06-07")
    dataset_id = await pipeline.wait_until(
        "SELECT dataset_id FROM training_requests WHERE id = $1", request_id, timeout=300
    )
    incoming = None
    for _ in range(100):
        incoming = await trainer_queue.get(fail=False)
        if incoming is not None:
            break
        await pipeline.wait_until("SELECT true")
    assert incoming is not None, pipeline.logs()
    ready = parse_message(incoming.body)
    await incoming.ack()
    assert isinstance(ready, TrainingDatasetReady)
    assert (ready.request_id, ready.dataset_id) == (request_id, dataset_id)
    row = await pipeline.pool.fetchrow("SELECT * FROM datasets WHERE id = $1", dataset_id)
    assert row["n_images"] > 10

    pipeline.signal("fetcher", signal.SIGTERM)
    assert pipeline.wait_exit("fetcher", timeout=120) == 0, pipeline.logs()
    logs = pipeline.logs()
    assert simulator_server.password not in logs  # not even at DEBUG level
    assert all(token not in logs for token in simulator_server.state.tokens)
    assert "Unclosed" not in logs and "Traceback" not in logs, logs
    assert "logged in to" in logs
