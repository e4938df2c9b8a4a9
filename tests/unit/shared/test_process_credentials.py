"""Which URL, role and user each process gets from the settings (no server needed)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from localstack import servers as local_services
from shared.settings import Settings


def _settings(**values: str) -> Settings:
    return Settings(_env_file=None, chouette_home=Path("/nonexistent"), **values)  # type: ignore[call-arg]


def test_every_process_falls_back_on_the_one_url() -> None:
    settings = _settings(database_url="postgresql://o:p@h/d", amqp_url="amqp://o:p@h/")
    for process in ("fetcher", "trainer", "evaluator", "api", "cli", "reader", "migrate"):
        assert settings.database_url_for(process).get_secret_value() == "postgresql://o:p@h/d"
    for process in ("fetcher", "trainer", "evaluator", "cli", "migrate"):
        assert settings.amqp_url_for(process).get_secret_value() == "amqp://o:p@h/"


def test_the_reader_falls_back_on_the_cli_before_the_one_url() -> None:
    settings = _settings(cli_database_url="postgresql://cli:x@h/d")
    assert settings.database_url_for("reader").get_secret_value() == "postgresql://cli:x@h/d"
    settings = _settings(
        cli_database_url="postgresql://c@h/d", reader_database_url="postgresql://r@h/d"
    )
    assert settings.database_url_for("reader").get_secret_value() == "postgresql://r@h/d"


def test_services_up_provisions_each_named_user_with_its_group() -> None:
    settings = _settings(
        database_url="postgresql://owner:o@127.0.0.1:5999/db",
        fetcher_database_url="postgresql://fetch:f%40pw@127.0.0.1:5999/db",
        api_database_url="postgresql://web:w@127.0.0.1:5999/db",
        trainer_database_url="postgresql://owner:o@127.0.0.1:5999/db",  # the owner: nothing
        amqp_url="amqp://admin:a@127.0.0.1:5998/",
        cli_amqp_url="amqp://cmd:c@127.0.0.1:5998/",
        evaluator_amqp_url="amqp://judge:j@127.0.0.1:5998/",
        broker_namespace="pipe.line",
    )
    rabbit, postgres = local_services.servers(settings)
    assert (postgres.user, postgres.port) == ("owner", 5999)
    assert postgres.logins == [
        ("fetch", "f@pw", "chouette_fetcher"),
        ("web", "w", "chouette_reader"),
    ]
    assert rabbit.user == "admin"
    assert rabbit.users == [("judge", "j", "evaluator"), ("cmd", "c", "cli")]
    assert rabbit.namespace_pattern == r"pipe\.line"


def test_rabbit_password_hash_is_rabbitmqs_salted_sha256() -> None:
    salt = b"\x01\x02\x03\x04"
    digest = base64.b64decode(local_services.rabbit_password_hash("pw", salt=salt))
    assert digest == salt + hashlib.sha256(salt + b"pw").digest()
