"""``chouette migrate`` creates the RabbitMQ users of least privilege through the management
API, on a RabbitMQ of its own that boots with one administrator (as compose's does)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aio_pika
import aiormq
import pytest

from chouette import rabbit_users
from chouette.commands import provision_broker_users
from chouette.errors import CommandFailed
from localstack.servers import RabbitServer, free_port
from shared.broker import declare_topology_as
from shared.settings import Settings

pytestmark = pytest.mark.integration

NAMESPACE = "chouette"
ADMIN_PASSWORD = "admin-pw"
PASSWORDS = {"chouette_fetcher": "f-pw", "chouette_trainer": "t-pw", "chouette_cli": "c-pw"}


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    server = RabbitServer(
        tmp_path_factory.mktemp("rabbit-mgmt"),
        port=free_port(),
        password=ADMIN_PASSWORD,
        management_port=free_port(),
    )
    server.start(timeout=180)
    try:
        asyncio.run(declare_topology_as(server.url, namespace=NAMESPACE, delivery_limit=5))
        yield server
    finally:
        server.stop()


def _url(rabbit: RabbitServer, user: str, password: str | None = None) -> str:
    return f"amqp://{user}:{password or PASSWORDS[user]}@127.0.0.1:{rabbit.port}/"


def _settings(rabbit: RabbitServer, admin_password: str = ADMIN_PASSWORD) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        amqp_url=_url(rabbit, "chouette", admin_password),
        migrate_amqp_url="",
        fetcher_amqp_url=_url(rabbit, "chouette_fetcher"),
        trainer_amqp_url=_url(rabbit, "chouette_trainer"),
        evaluator_amqp_url="",  # AMQP_URL's user: the administrator, nothing to create
        cli_amqp_url=_url(rabbit, "chouette_cli"),
        rabbitmq_management_url=rabbit.management_url,
        broker_namespace=NAMESPACE,
    )


async def _consume(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        amqp_queue = await channel.get_queue(queue, ensure=True)
        await amqp_queue.consume(lambda message: asyncio.sleep(0))
    finally:
        await connection.close()


async def test_migrate_creates_each_processs_user_with_its_permissions(
    rabbit: RabbitServer,
) -> None:
    settings = _settings(rabbit)
    for _ in range(2):  # idempotent: the second run changes nothing and fails nothing
        names = await provision_broker_users(settings)
        assert names == ["chouette_fetcher", "chouette_trainer", "chouette_cli"]
        fetcher = _url(rabbit, "chouette_fetcher")
        await _consume(fetcher, f"{NAMESPACE}.fetcher")
        await _consume(fetcher, f"{NAMESPACE}.fetcher.dead")
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _consume(fetcher, f"{NAMESPACE}.trainer")
        await _consume(_url(rabbit, "chouette_trainer"), f"{NAMESPACE}.trainer")
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _consume(_url(rabbit, "chouette_cli"), f"{NAMESPACE}.fetcher")


async def test_a_wrong_admin_password_fails_in_one_line_without_a_password(
    rabbit: RabbitServer,
) -> None:
    with pytest.raises(CommandFailed) as failure:
        await provision_broker_users(_settings(rabbit, admin_password="wrong-admin-pw"))
    message = str(failure.value)
    assert "\n" not in message
    assert "401" in message and "chouette_fetcher" in message, message
    for secret in ("wrong-admin-pw", ADMIN_PASSWORD, *PASSWORDS.values()):
        assert secret not in message


async def test_an_unreachable_management_api_fails_in_one_line(
    rabbit: RabbitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rabbit_users, "CONNECT_WAIT_S", 2.0)
    settings = _settings(rabbit)
    settings.rabbitmq_management_url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandFailed) as failure:
        await provision_broker_users(settings)
    message = str(failure.value)
    assert "\n" not in message and "chouette_fetcher" in message, message
    for secret in (ADMIN_PASSWORD, *PASSWORDS.values()):
        assert secret not in message
