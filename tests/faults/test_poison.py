"""Poison messages never stop a consumer: they end in the dead-letter queue with a failure row.

The fuzz publishes at least 500 hypothesis-generated bodies (random bytes, random JSON,
valid messages with one field corrupted, nesting deeper than the parser's recursion limit)
through a real RabbitMQ to a real consumer and checks after each that the consumer still
handles a valid message.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import db
from shared.broker import FETCHER, Broker
from shared.messages import EvaluationRequested, TrainingRequested
from shared.runtime import make_failure_sink

pytestmark = pytest.mark.integration

VALID = EvaluationRequested(request_id=uuid.uuid4(), model_id=1).model_dump(mode="json")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_valid(draw: st.DrawFn) -> bytes:
    body = dict(VALID)
    key = draw(st.sampled_from(sorted(body)))
    if draw(st.booleans()):
        body[key] = draw(json_values)
    else:
        del body[key]
    return json.dumps(body).encode()


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    """Arrays/objects nested past the parser's recursion limit, closed or not, maybe
    inside an otherwise valid message (``json`` raises ``RecursionError`` on these)."""
    depth = draw(st.integers(min_value=500, max_value=20_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"b":', b"}]")]))
    inner = opener * depth + (b"1" + closer * depth if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(VALID)))
        valid = json.dumps({**VALID, key: None}).encode()
        return valid.replace(b"null", inner, 1)
    return inner


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_valid(),
    deeply_nested(),
)


class ConsumerThread:
    """A real consumer in its own event loop, driven from a synchronous hypothesis test."""

    def __init__(self, amqp_url: str, database_url: str, namespace: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.handled: asyncio.Queue[Any] | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self._start(amqp_url, database_url, namespace))

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, amqp_url: str, database_url: str, namespace: str) -> None:
        self.handled = asyncio.Queue()
        self.pool = await db.create_pool(database_url)
        self.broker = Broker(amqp_url, namespace=namespace, delivery_limit=2, retry_backoff=0.01)
        await self.broker.connect()

        async def handler(message: Any) -> None:
            assert self.handled is not None
            await self.handled.put(message)

        await self.broker.consume(
            FETCHER,
            (TrainingRequested, EvaluationRequested),
            handler,
            on_failure=make_failure_sink(self.pool),
            prefetch=10,
        )
        assert self.broker.connection is not None
        channel = await self.broker.connection.channel()
        self.dead = await channel.get_queue(f"{self.broker.queue_name(FETCHER)}.dead")

    async def send_raw(self, body: bytes) -> str:
        """Publish a body; return 'handled' or 'dead' depending on where it ended."""
        assert self.broker._exchange is not None and self.handled is not None
        await self.broker._exchange.publish(
            aio_pika.Message(body), routing_key="evaluation.requested", mandatory=True
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30  # generous: the machine may be busy training
        while loop.time() < deadline:
            if not self.handled.empty():
                await self.handled.get()
                return "handled"
            message = await self.dead.get(fail=False)
            if message is not None:
                await message.ack()
                return "dead"
            await asyncio.sleep(0.02)
        raise AssertionError(f"body neither handled nor dead-lettered: {body[:80]!r}")

    async def alive(self) -> bool:
        valid = EvaluationRequested(request_id=uuid.uuid4(), model_id=1)
        return await self.send_raw(valid.to_json()) == "handled"

    def close(self) -> None:
        async def stop() -> None:
            await self.broker.close()
            await self.pool.close()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture
def consumer(servers: Any, db_url: str, namespace: str) -> Iterator[ConsumerThread]:
    thread = ConsumerThread(servers.amqp_url, db_url, namespace)
    yield thread
    thread.close()


def test_invalid_json_wrong_schema_and_unknown_version_are_dead_lettered(
    consumer: ConsumerThread,
) -> None:
    cases = {
        b"{definitely not json": "not JSON",
        b"\x00\x00\x00": "not JSON",  # NUL cannot go into a PostgreSQL text column as is
        json.dumps({**VALID, "model_id": "seven"}).encode(): "model_id",
        json.dumps({**VALID, "schema_version": 7}).encode(): "unsupported schema_version 7",
        json.dumps({**VALID, "type": "Unknown"}).encode(): "invalid Unknown",
    }
    for body, reason in cases.items():
        assert consumer.run(consumer.send_raw(body)) == "dead"
        error = consumer.run(
            consumer.pool.fetchval("SELECT error FROM failures ORDER BY id DESC LIMIT 1")
        )
        assert reason in error
        assert consumer.run(consumer.alive())


def test_wrong_message_type_for_the_queue_is_dead_lettered(consumer: ConsumerThread) -> None:
    from shared.messages import ModelReady

    wrong = ModelReady(request_id=uuid.uuid4(), model_id=1, dataset_id=1)
    assert consumer.run(consumer.send_raw(wrong.to_json())) == "dead"
    error = consumer.run(consumer.pool.fetchval("SELECT error FROM failures"))
    assert "accepts TrainingRequested, EvaluationRequested, got ModelReady" in error


def test_fuzzed_bodies_never_crash_the_consumer(consumer: ConsumerThread) -> None:
    outcomes: dict[str, int] = {"handled": 0, "dead": 0}

    @settings(
        max_examples=500,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(body=bodies)
    def check(body: bytes) -> None:
        outcomes[consumer.run(consumer.send_raw(body))] += 1

    check()
    assert sum(outcomes.values()) >= 500
    assert outcomes["dead"] > 400  # nearly every random body is invalid
    assert consumer.run(consumer.alive())
    failures = consumer.run(consumer.pool.fetchval("SELECT count(*) FROM failures"))
    assert failures == outcomes["dead"]
