"""Training runs off the event loop: a 2 s AMQP heartbeat survives a long training."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from services.trainer.handler import TrainerHandler
from shared.broker import EVALUATOR, TRAINER, Broker
from shared.messages import ModelReady, TrainingDatasetReady, TrainingParams, parse_message
from shared.runtime import make_failure_sink
from shared.settings import Settings, TrainerSettings
from tests.plugins.datasets import create_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEARTBEAT = 2


async def queue_depth(broker: Broker, queue: str) -> int:
    assert broker.connection is not None
    channel = await broker.connection.channel()
    try:
        declared = await channel.declare_queue(broker.queue_name(queue), passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_heartbeat_keeps_flowing_during_a_long_training(
    pool: Any, settings: Settings, broker: Broker
) -> None:
    dataset_id = await create_dataset(pool, per_class={"vine": 8, "ground": 8, "grass": 8})
    consumer = Broker(
        settings.amqp_url.get_secret_value(),
        namespace=settings.broker_namespace,
        delivery_limit=settings.broker_delivery_limit,
        heartbeat=HEARTBEAT,
    )
    await consumer.connect()
    assert consumer.connection is not None
    closed: list[Any] = []
    reconnected: list[Any] = []
    consumer.connection.close_callbacks.add(lambda *a: closed.append(a))
    consumer.connection.reconnect_callbacks.add(lambda *a: reconnected.append(a))

    trainer = TrainerHandler(pool, TrainerSettings(_env_file=None))  # type: ignore[call-arg]
    calls: list[float] = []

    async def handle(msg: TrainingDatasetReady) -> ModelReady:
        started = time.monotonic()
        try:
            return await trainer(msg)
        finally:
            calls.append(time.monotonic() - started)

    try:
        await consumer.consume(
            TRAINER, (TrainingDatasetReady,), handle, on_failure=make_failure_sink(pool), prefetch=1
        )
        request_id = uuid.uuid4()
        await broker.publish(
            TrainingDatasetReady(
                request_id=request_id,
                dataset_id=dataset_id,
                training=TrainingParams(
                    architecture="ResNet50",
                    epochs=2,
                    batch_size=4,
                    image_size=32,
                    min_images_per_epoch=0,
                ),
            )
        )
        assert broker.connection is not None
        channel = await broker.connection.channel()
        evaluator_queue = await channel.get_queue(broker.queue_name(EVALUATOR))
        deadline = time.monotonic() + 900
        incoming = None
        while incoming is None and time.monotonic() < deadline:
            incoming = await evaluator_queue.get(fail=False)
            if incoming is None:
                await asyncio.sleep(0.5)
        assert incoming is not None, "no ModelReady within 15 minutes"
        await incoming.ack()
        out = parse_message(incoming.body)
        assert isinstance(out, ModelReady) and out.request_id == request_id
        # Published after the commit: the model is trained when the event arrives.
        assert await pool.fetchval("SELECT status FROM models WHERE id = $1", out.model_id) == (
            "trained"
        )

        await asyncio.sleep(2 * HEARTBEAT)  # let a late redelivery show up, if any
        assert len(calls) == 1, "handled more than once: the delivery was not acked in time"
        assert calls[0] > 5 * HEARTBEAT, f"training took only {calls[0]:.1f}s"
        assert not closed and not reconnected, "the consumer's connection dropped"
        assert not consumer.connection.is_closed
        assert await queue_depth(broker, TRAINER) == 0
        assert await queue_depth(broker, f"{TRAINER}.dead") == 0
        assert await queue_depth(broker, EVALUATOR) == 0  # exactly one ModelReady
    finally:
        await consumer.close()
