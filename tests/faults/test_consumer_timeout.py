"""A training longer than RabbitMQ's consumer_timeout is trained once and completes.

In production ``consumer_timeout`` is set an hour above ``TRAINER_MAX_SECONDS`` so it
never fires; here it is 20 seconds, to prove what happens if it does (README, Guarantees).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from localstack.servers import RabbitServer
from tests.faults.common import LONG, TAKEN_OVER, assert_one_model, epoch_rows

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


async def test_training_longer_than_consumer_timeout_completes_once(
    private_rabbit: Any, db_url: str, pipeline_on: Any
) -> None:
    # A 20-second timeout, checked every 2 s (RabbitMQ checks once a minute by default,
    # which would let a delivery live a minute longer than its timeout).
    rabbit: RabbitServer = await asyncio.to_thread(
        private_rabbit, consumer_timeout_ms=20_000, channel_tick_ms=2_000
    )
    # Every timeout returns the message to the queue, which counts as a delivery: a room of
    # 20 lets a slow, loaded machine time the delivery out many times over.
    async with pipeline_on(rabbit.url, db_url, delivery_limit=20) as pipeline:
        pipeline.start_all()
        request_id = await pipeline.submit_training(
            *LONG, epochs=4, image_size=32, early_stopping_patience=10
        )
        await pipeline.wait_until(
            "SELECT stage = 'training' FROM training_requests WHERE id = $1", request_id
        )
        started = time.monotonic()
        row = await pipeline.wait_for(request_id, timeout=900)
        took = time.monotonic() - started
        assert row["status"] == "succeeded", (row["error"], pipeline.logs())
        assert took > 25, f"the training took {took:.0f} s: it must outlast the consumer timeout"
        await assert_one_model(pipeline, request_id)
        epochs = await epoch_rows(pipeline, request_id)
        assert [e["epoch"] for e in epochs] == list(range(1, 5))
        trainer_log = pipeline.services["trainer"].text()
        # The broker did time the delivery out, and the redelivery was taken over by the
        # handling in progress (which aio-pika no longer cancels with the channel).
        assert TAKEN_OVER in trainer_log
        assert trainer_log.count("training ResNet50") == 1  # trained once
        evaluations = await pipeline.pool.fetchval("SELECT count(*) FROM evaluations")
        assert evaluations == 1
