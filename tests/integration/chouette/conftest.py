"""The CLI's commands in these tests run as the CLI's and the reader's PostgreSQL roles and
the CLI's RabbitMQ user (tests/plugins/roles.py), never migrating nor declaring: the tests
of `prune`, `promote`, `champion`, `train`, `status`... prove their grants are enough. The
``pool`` fixture, which seeds and checks, stays the owner's."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from shared.settings import Settings
from tests.plugins.roles import BROKER_LOGINS, Login


@pytest.fixture
def settings(settings: Settings, role_logins: dict[str, Login], servers: Any) -> Settings:
    db_url = settings.database_url.get_secret_value()
    update: dict[str, Any] = {
        "cli_database_url": role_logins["cli"].url(db_url),
        "reader_database_url": role_logins["reader"].url(db_url),
        "auto_migrate": False,
    }
    if servers.users_amqp_url is not None:
        update["cli_amqp_url"] = BROKER_LOGINS["cli"].url(servers.amqp_url)
    return settings.model_copy(
        update={k: SecretStr(v) if k.endswith("_url") else v for k, v in update.items()}
    )
