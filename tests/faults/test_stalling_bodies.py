"""Bodies that used to stall a service's consumer: each ends dead-lettered with a failure row.

``b"[" * 2000`` made ``json.loads`` raise ``RecursionError``, which escaped the broker
layer: the message was neither acked nor rejected, and with prefetch 1 the trainer and the
evaluator stopped working until RabbitMQ's consumer timeout (and again after a restart).
Each service here is the real subprocess; after the bodies, a valid message (for rows that
do not exist, so it is handled in a moment) must be settled within 30 s.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import pytest

from shared import db
from shared.messages import (
    EvaluationRequested,
    Message,
    ModelReady,
    TrainingDatasetReady,
    TrainingParams,
)
from tests.plugins.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

MB = 1024 * 1024

# What each body is, and a word the failure row's error must hold.
STALLING: list[tuple[str, bytes, str]] = [
    ("nesting 2000", b"[" * 2000, "nested"),
    ("nesting 10,000", b'{"a":' * 10_000, "nested"),
    ("a 50 MB body", b'{"padding": "' + b"x" * (50 * MB) + b'"}', "limit"),
    ("a 50 MB schema_version", b'{"schema_version": "' + b"9" * (50 * MB) + b'"}', "limit"),
    # Under the size limit: the error (and so the failure row and the log line) stays short.
    ("a 200 kB schema_version", b'{"schema_version": "' + b"9" * 200_000 + b'"}', "schema_version"),
]


def valid_message(service: str, request_id: uuid.UUID) -> Message:
    """A valid message for rows that do not exist: the service fails it at once."""
    if service == "fetcher":
        return EvaluationRequested(request_id=request_id, model_id=987_654)
    if service == "trainer":
        return TrainingDatasetReady(
            request_id=request_id,
            dataset_id=987_654,
            training=TrainingParams(architecture="ResNet50", epochs=1, image_size=32),
        )
    return ModelReady(request_id=request_id, model_id=987_654, dataset_id=987_654)


ROUTING = {
    "fetcher": "evaluation.requested",
    "trainer": "dataset.ready.training",
    "evaluator": "model.ready",
}


@pytest.mark.parametrize("service", ["fetcher", "trainer", "evaluator"])
async def test_stalling_bodies_are_dead_lettered_and_the_next_message_is_handled(
    pipeline: Pipeline, service: str
) -> None:
    pipeline.start(service)
    await asyncio.to_thread(pipeline.wait_ready, 400)
    exchange = pipeline.broker._exchange
    assert exchange is not None
    for _, body, _ in STALLING:
        await exchange.publish(
            aio_pika.Message(body, correlation_id=str(uuid.uuid4())),
            routing_key=ROUTING[service],
            mandatory=True,
        )

    request_id = uuid.uuid4()
    await db.ensure_request(pipeline.pool, request_id, "training", {})
    await pipeline.broker.publish(valid_message(service, request_id))
    published = time.monotonic()
    row = await pipeline.wait_for(request_id, timeout=30)
    assert time.monotonic() - published < 30
    assert row["status"] == "failed"  # handled: the rows it names do not exist

    failures = await pipeline.pool.fetch(
        "SELECT error, left(body, 30) AS head, length(body) AS body_length FROM failures"
        " WHERE request_id IS DISTINCT FROM $1",
        request_id,
    )
    assert len(failures) == len(STALLING), [f["error"][:200] for f in failures]
    for what, body, word in STALLING:
        # A failure row per body (prefetch > 1 may settle them in any order).
        [failure] = [
            f for f in failures if body.startswith(f["head"].encode()) and word in f["error"]
        ]
        assert len(failure["error"]) < 2_000, what
        assert failure["body_length"] <= 10_000, what
    # The service is still the one that started: nothing crashed it.
    assert pipeline.services[service].popen.poll() is None
