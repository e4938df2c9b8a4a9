"""Which RabbitMQ users ``chouette migrate`` creates (chouette/rabbit_users.py), no server."""

from __future__ import annotations

import pytest

from chouette.rabbit_users import BrokerUser, ProvisionError, broker_users
from shared.settings import Settings

BROKER = "@rabbitmq:5672/"


def _settings(**urls: str) -> Settings:
    base = {f"{p}_amqp_url": "" for p in ("migrate", "fetcher", "trainer", "evaluator", "cli")}
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        amqp_url=f"amqp://chouette:admin-pw{BROKER}",
        **{**base, **urls},
    )


def test_users_other_than_the_administrator_are_created_with_their_url_passwords() -> None:
    users = broker_users(
        _settings(
            fetcher_amqp_url=f"amqp://chouette_fetcher:f%40pw{BROKER}",
            trainer_amqp_url=f"amqp://chouette:admin-pw{BROKER}",  # the administrator
            cli_amqp_url="amqp://chouette_cli:c-pw@rabbitmq:5672/pipeline",
        )
    )
    assert users == [
        BrokerUser("chouette_fetcher", "f@pw", "/", "fetcher"),
        BrokerUser("chouette_cli", "c-pw", "pipeline", "cli"),
    ]
    assert "f@pw" not in repr(users)


def test_the_administrator_is_migrates_user_when_it_has_one() -> None:
    settings = _settings(
        migrate_amqp_url=f"amqp://root:r-pw{BROKER}",
        fetcher_amqp_url=f"amqp://chouette:admin-pw{BROKER}",  # not the administrator here
    )
    assert [user.name for user in broker_users(settings)] == ["chouette"]


def test_two_processes_may_not_share_a_user() -> None:
    with pytest.raises(ProvisionError, match="TRAINER_AMQP_URL") as failure:
        broker_users(
            _settings(
                fetcher_amqp_url=f"amqp://shared:s-pw{BROKER}",
                trainer_amqp_url=f"amqp://shared:s-pw{BROKER}",
            )
        )
    assert "s-pw" not in str(failure.value)
