"""``python -m services.evaluator`` as a process: wiring, the published event, a clean stop."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from shared.messages import ModelReady
from tests.integration.evaluator import rows
from tests.plugins.pipeline import Pipeline

pytestmark = pytest.mark.integration


async def test_the_service_evaluates_publishes_and_stops_cleanly(pipeline: Pipeline) -> None:
    pool, broker = pipeline.pool, pipeline.broker
    dataset_id, _ = await rows.dataset(
        pool, {"train": {"vine": 2, "grass": 2}, "test": {"vine": 3, "grass": 2}}
    )
    request_id, model_id, _ = await rows.stored_model(pool, dataset_id, classes=("vine", "grass"))
    assert broker.connection is not None
    channel = await broker.connection.channel()
    events = await channel.get_queue(broker.queue_name("events"), ensure=True)

    pipeline.start("evaluator")
    await broker.publish(
        ModelReady(request_id=request_id, model_id=model_id, dataset_id=dataset_id)
    )
    row = await pipeline.wait_for(request_id, timeout=600)

    assert (row["status"], row["stage"]) == ("succeeded", "done"), pipeline.logs()
    # The event is published after the commit that made the request succeeded: poll for it
    # (one basic.get answers at once, empty or not).
    deadline = time.monotonic() + 60
    while (event := await events.get(fail=False)) is None:
        assert time.monotonic() < deadline, f"no ModelEvaluated event\n{pipeline.logs()}"
        await asyncio.sleep(0.2)
    body = json.loads(event.body)
    assert body["type"] == "ModelEvaluated"
    assert (body["model_id"], body["evaluation_id"]) == (model_id, row["evaluation_id"])
    await event.ack()

    pipeline.signal("evaluator", signal.SIGTERM)
    assert pipeline.wait_exit("evaluator", timeout=120) == 0, pipeline.logs()
