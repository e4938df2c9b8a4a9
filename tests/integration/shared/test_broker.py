"""The broker layer against a real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import aio_pika
import pytest

from shared import db
from shared.broker import FETCHER, Broker
from shared.errors import PermanentError, RetryableError
from shared.messages import DatasetSpec, Message, TrainingParams, TrainingRequested
from shared.runtime import make_failure_sink

pytestmark = pytest.mark.integration


def training_request() -> TrainingRequested:
    return TrainingRequested(
        request_id=uuid.uuid4(),
        dataset=DatasetSpec(start_date=dt.date(2021, 5, 1), end_date=dt.date(2021, 6, 1)),
        training=TrainingParams(architecture="ResNet50", epochs=1, image_size=32),
    )


async def get_dead(broker: Broker, queue: str, wait: float = 10.0) -> aio_pika.IncomingMessage:
    """Wait for a message on ``<queue>.dead``."""
    assert broker.connection is not None
    channel = await broker.connection.channel()
    dead = await channel.get_queue(f"{broker.queue_name(queue)}.dead")
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        message = await dead.get(fail=False)
        if message is not None:
            await message.ack()
            return message  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nothing dead-lettered on {queue} in {wait}s")
        await asyncio.sleep(0.1)


async def consume_into(
    broker: Broker, pool: db.Pool, handler: object, queue: str = FETCHER
) -> None:
    await broker.consume(
        queue, (TrainingRequested,), handler, on_failure=make_failure_sink(pool), prefetch=2
    )


async def test_publish_then_consume_with_confirms(broker: Broker, pool: db.Pool) -> None:
    received: asyncio.Queue[Message] = asyncio.Queue()

    async def handler(message: TrainingRequested) -> None:
        await received.put(message)

    await consume_into(broker, pool, handler)
    sent = training_request()
    await broker.publish(sent)  # returns only once the broker confirmed
    got = await asyncio.wait_for(received.get(), 10)
    assert got == sent
    assert got.message_id == sent.message_id


async def test_unroutable_publish_is_an_error(broker: Broker) -> None:
    assert broker._exchange is not None
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await broker._exchange.publish(
            aio_pika.Message(b"{}"), routing_key="nobody.listens", mandatory=True
        )


async def test_permanent_error_dead_letters_and_records_failure(
    broker: Broker, pool: db.Pool
) -> None:
    calls = 0

    async def handler(message: TrainingRequested) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("dataset 7 has 2 training images; at least 6 are needed")

    sent = training_request()
    await db.ensure_request(pool, sent.request_id, "training", {})
    await consume_into(broker, pool, handler)
    await broker.publish(sent)
    dead = await get_dead(broker, FETCHER)
    assert dead.correlation_id == str(sent.request_id)
    row = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", sent.request_id)
    assert row["status"] == "failed"
    assert row["stage"] == "fetching"
    assert "at least 6 are needed" in row["error"]
    assert calls == 1
    failures = await pool.fetchval(
        "SELECT count(*) FROM failures WHERE request_id = $1", sent.request_id
    )
    assert failures == 1


async def test_retryable_error_is_redelivered_then_dead_lettered(
    broker: Broker, pool: db.Pool
) -> None:
    attempts: list[int] = []

    async def handler(message: TrainingRequested) -> None:
        attempts.append(1)
        raise RetryableError("API answered 503")

    sent = training_request()
    await db.ensure_request(pool, sent.request_id, "training", {})
    await consume_into(broker, pool, handler)
    await broker.publish(sent)
    await get_dead(broker, FETCHER, wait=20)
    assert len(attempts) == broker.delivery_limit == 3
    row = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", sent.request_id)
    assert row["status"] == "failed"
    assert "gave up after 3 attempts" in row["error"]
    assert "503" in row["error"]


async def test_retryable_error_then_success_acks_once(broker: Broker, pool: db.Pool) -> None:
    attempts = 0
    done = asyncio.Event()

    async def handler(message: TrainingRequested) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RetryableError("timeout")
        done.set()

    await consume_into(broker, pool, handler)
    await broker.publish(training_request())
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.sleep(0.5)
    assert attempts == 2
    assert broker.connection is not None
    channel = await broker.connection.channel()
    queue = await channel.declare_queue(broker.queue_name(FETCHER), passive=True)
    assert queue.declaration_result.message_count == 0


async def test_malformed_json_dead_letters_and_consumer_keeps_running(
    broker: Broker, pool: db.Pool
) -> None:
    received: asyncio.Queue[Message] = asyncio.Queue()

    async def handler(message: TrainingRequested) -> None:
        await received.put(message)

    await consume_into(broker, pool, handler)
    assert broker._exchange is not None
    bad_id = uuid.uuid4()
    await db.ensure_request(pool, bad_id, "training", {})
    await broker._exchange.publish(
        aio_pika.Message(b"{not json", correlation_id=str(bad_id)),
        routing_key="training.requested",
        mandatory=True,
    )
    dead = await get_dead(broker, FETCHER)
    assert dead.body == b"{not json"
    row = await pool.fetchrow("SELECT status, error FROM training_requests WHERE id = $1", bad_id)
    assert row["status"] == "failed"
    assert "not JSON" in row["error"]

    # The consumer survived: a good message still goes through.
    good = training_request()
    await broker.publish(good)
    assert (await asyncio.wait_for(received.get(), 10)) == good


async def test_unknown_schema_version_dead_letters(broker: Broker, pool: db.Pool) -> None:
    async def handler(message: TrainingRequested) -> None:
        raise AssertionError("must not be called")

    await consume_into(broker, pool, handler)
    body = training_request().model_dump(mode="json")
    body["schema_version"] = 99
    assert broker._exchange is not None
    import json

    await broker._exchange.publish(
        aio_pika.Message(json.dumps(body).encode()), routing_key="training.requested"
    )
    await get_dead(broker, FETCHER)
    error = await pool.fetchval("SELECT error FROM failures ORDER BY id DESC LIMIT 1")
    assert "unsupported schema_version 99" in error


async def test_results_are_published_before_ack(broker: Broker, pool: db.Pool) -> None:
    """A handler's returned message reaches the next queue."""
    from shared.broker import TRAINER
    from shared.messages import TrainingDatasetReady

    async def handler(message: TrainingRequested) -> TrainingDatasetReady:
        return TrainingDatasetReady(
            request_id=message.request_id, dataset_id=1,
            training=message.training,
        )  # fmt: skip

    got: asyncio.Queue[Message] = asyncio.Queue()

    async def trainer(message: TrainingDatasetReady) -> None:
        await got.put(message)

    await consume_into(broker, pool, handler)
    await broker.consume(
        TRAINER, (TrainingDatasetReady,), trainer, on_failure=make_failure_sink(pool)
    )
    sent = training_request()
    await broker.publish(sent)
    out = await asyncio.wait_for(got.get(), 10)
    assert out.request_id == sent.request_id


async def test_stop_consuming_abandons_unfinished_message(broker: Broker, pool: db.Pool) -> None:
    """On stop, a message still in flight after the grace period is not acked."""
    started = asyncio.Event()

    async def slow(message: TrainingRequested) -> None:
        started.set()
        await asyncio.sleep(60)

    await consume_into(broker, pool, slow)
    await broker.publish(training_request())
    await asyncio.wait_for(started.wait(), 10)
    await broker.stop_consuming(grace=0.2)
    await broker.close()
    # A new consumer gets the same message again.
    fresh = Broker(broker.url, namespace=broker.namespace, delivery_limit=3)
    await fresh.connect()
    try:
        got: asyncio.Queue[TrainingRequested] = asyncio.Queue()

        async def handler(message: TrainingRequested) -> None:
            await got.put(message)

        await consume_into(fresh, pool, handler)
        await asyncio.wait_for(got.get(), 10)
    finally:
        await fresh.close()
