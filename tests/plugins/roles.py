"""Login roles of least privilege for the test servers (registered by ``tests/conftest.py``).

``role_logins`` (session) creates one login role per process on the session's PostgreSQL,
each a member of its group role from :mod:`shared.privileges` (the template database's
migration created those and their grants), with a random password.
``role_env(db_url, logins, amqp_url)`` is the environment that makes every process of a
pipeline connect to ``db_url`` as its own role, to RabbitMQ as its own user, and never
migrate nor declare: the services' harness (``tests/plugins/pipeline.py``) uses it, so its
tests prove that each role's grants and each user's permissions are enough.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from localstack.servers import PROCESS_GROUPS


@dataclass(frozen=True)
class Login:
    user: str
    password: str

    def url(self, database_url: str) -> str:
        """``database_url`` (the owner's) with this login's credentials."""
        parts = urlsplit(database_url)
        host = parts.hostname or "127.0.0.1"
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{quote(self.user)}:{quote(self.password, safe='')}@{host}{port}"
        return urlunsplit(parts._replace(netloc=netloc))


async def create_logins(admin_url: str) -> dict[str, Login]:
    """One login role per process of ``PROCESS_GROUPS`` (``chouette_test_<process>``)."""
    password = secrets.token_urlsafe(16)
    logins = {}
    con = await asyncpg.connect(admin_url)
    try:
        for process, group in PROCESS_GROUPS.items():
            user = f"chouette_test_{process}"
            exists = await con.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
            verb = "ALTER" if exists else "CREATE"
            literal = await con.fetchval("SELECT quote_literal($1)", password)
            await con.execute(f'{verb} ROLE "{user}" LOGIN PASSWORD {literal}')
            await con.execute(f'GRANT "{group}" TO "{user}"')
            logins[process] = Login(user, password)
    finally:
        await con.close()
    return logins


# RabbitMQ users of the session's broker (created at its boot: tests/conftest.py), one per
# process, with the permissions of shared.broker.permissions on every test namespace.
BROKER_PROCESSES = ("fetcher", "trainer", "evaluator", "cli")
BROKER_NAMESPACES = "[A-Za-z0-9_-]+"
_BROKER_PASSWORD = secrets.token_urlsafe(16)
BROKER_LOGINS = {p: Login(f"chouette_test_{p}", _BROKER_PASSWORD) for p in BROKER_PROCESSES}


def broker_users() -> list[tuple[str, str, str]]:
    """``RabbitServer.users`` of the session's broker."""
    return [(login.user, login.password, p) for p, login in BROKER_LOGINS.items()]


def role_env(
    database_url: str, logins: Mapping[str, Login], amqp_url: str | None = None
) -> dict[str, str]:
    """``FETCHER_DATABASE_URL``… for ``database_url``, ``AUTO_MIGRATE=false``, and with
    ``amqp_url`` (a broker with the users above) ``FETCHER_AMQP_URL``…"""
    env = {f"{p.upper()}_DATABASE_URL": login.url(database_url) for p, login in logins.items()}
    if amqp_url is not None:
        env |= {f"{p.upper()}_AMQP_URL": login.url(amqp_url) for p, login in BROKER_LOGINS.items()}
    env["AUTO_MIGRATE"] = "false"
    return env


@pytest.fixture(scope="session")
def role_logins(servers: object) -> dict[str, Login]:
    return asyncio.run(create_logins(servers.database_url))  # type: ignore[attr-defined]
