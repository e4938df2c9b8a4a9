"""RabbitMQ users of least privilege, on a RabbitMQ of their own (its users load at boot).

Each service's user may consume only its own queue (and its dead letters) and publish to the
pipeline's exchange; the CLI's user may only publish; none may declare anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import aiormq
import pytest

from localstack.servers import RabbitServer, free_port
from shared.broker import Broker
from shared.messages import DatasetSpec, TrainingParams, TrainingRequested

pytestmark = pytest.mark.integration

NAMESPACE = "chouette"
PASSWORDS = {"fetch": "f-pw", "train": "t-pw", "cmd": "c-pw"}


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    server = RabbitServer(
        tmp_path_factory.mktemp("rabbit"),
        port=free_port(),
        password="admin-pw",
        users=[
            ("fetch", PASSWORDS["fetch"], "fetcher"),
            ("train", PASSWORDS["train"], "trainer"),
            ("cmd", PASSWORDS["cmd"], "cli"),
        ],
        namespace_pattern=NAMESPACE,
    )
    server.start()
    try:
        asyncio.run(_declare(server.url))
        yield server
    finally:
        server.stop()


async def _declare(url: str) -> None:
    broker = Broker(url, namespace=NAMESPACE)
    await broker.connect()  # the administrator declares the topology
    await broker.close()


def _url(rabbit: RabbitServer, user: str) -> str:
    return f"amqp://{user}:{PASSWORDS[user]}@127.0.0.1:{rabbit.port}/"


def _request() -> TrainingRequested:
    return TrainingRequested(
        request_id=uuid.uuid4(),
        dataset=DatasetSpec(start_date=dt.date(2021, 5, 1), end_date=dt.date(2021, 5, 7)),
        training=TrainingParams(architecture="ResNet50", epochs=1, image_size=32, batch_size=8),
    )


async def _consume(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        amqp_queue = await channel.get_queue(queue, ensure=True)
        await amqp_queue.consume(lambda message: asyncio.sleep(0))
    finally:
        await connection.close()


async def _declare_queue(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()


async def test_a_fetcher_user_cannot_declare_or_consume_the_trainers_queue(
    rabbit: RabbitServer,
) -> None:
    fetcher = _url(rabbit, "fetch")
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _consume(fetcher, f"{NAMESPACE}.trainer")
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _consume(fetcher, f"{NAMESPACE}.trainer.dead")
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _declare_queue(fetcher, f"{NAMESPACE}.trainer")
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _declare_queue(fetcher, "planted")
    # Its own queue and dead letters it consumes; the exchange it publishes to.
    await _consume(fetcher, f"{NAMESPACE}.fetcher")
    await _consume(fetcher, f"{NAMESPACE}.fetcher.dead")
    broker = Broker(fetcher, namespace=NAMESPACE, declare=False)
    await broker.connect()
    try:
        await broker.publish(_request())
    finally:
        await broker.close()


async def test_the_cli_user_publishes_requests_and_consumes_nothing(rabbit: RabbitServer) -> None:
    cli = _url(rabbit, "cmd")
    broker = Broker(cli, namespace=NAMESPACE, declare=False)
    await broker.connect()
    try:
        await broker.publish(_request())
        counts = await broker.consumer_counts(["fetcher", "trainer", "evaluator"])
        assert set(counts) == {"fetcher", "trainer", "evaluator"}
    finally:
        await broker.close()
    for queue in ("fetcher", "trainer", "evaluator", "events", "fetcher.dead"):
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _consume(cli, f"{NAMESPACE}.{queue}")
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _declare_queue(cli, "planted")


async def test_a_user_cannot_declare_the_topology(rabbit: RabbitServer) -> None:
    broker = Broker(_url(rabbit, "train"), namespace=NAMESPACE)  # declare=True
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await broker.connect()
    await broker.close()


def test_the_definitions_file_is_private_and_holds_hashes_only(rabbit: RabbitServer) -> None:
    path = Path(rabbit.base_dir) / "definitions.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for password in (*PASSWORDS.values(), "admin-pw"):
        assert password not in text
    users = {u["name"]: u for u in json.loads(text)["users"]}
    assert set(users) == {"chouette", "fetch", "train", "cmd"}
