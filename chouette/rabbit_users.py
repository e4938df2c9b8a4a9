"""RabbitMQ users of least privilege, created through the management HTTP API.

Locally, ``chouette services up`` creates a user per process when its broker boots (a
definitions file); a broker started elsewhere, compose's, boots with one administrator.
``chouette migrate`` then creates the others as that administrator when
``RABBITMQ_MANAGEMENT_URL`` is set: for each process whose ``*_AMQP_URL`` names a user
other than the administrator, that user with the URL's password and no tags, and its
permissions (``shared.broker.permissions``) on the URL's virtual host. PUT both times:
running it again changes nothing, or sets a changed password.

Errors are one line that names the user and the HTTP status, never a password (the
credentials go in an Authorization header and request bodies, never in a URL).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

import aiohttp
from pydantic import SecretStr

from shared.broker import permissions
from shared.settings import Settings, redact_url

# Processes that may have a RabbitMQ user of their own (shared.broker.permissions).
PROCESSES = ("fetcher", "trainer", "evaluator", "cli")
# Seconds for each request to the management API, connecting included.
REQUEST_TIMEOUT_S = 10.0
# Seconds a refused connection to the management API is tried again.
CONNECT_WAIT_S = 30.0


class ProvisionError(Exception):
    """A user could not be created or given its permissions (one line, no password)."""


@dataclass(frozen=True)
class BrokerUser:
    name: str
    password: str = field(repr=False)
    vhost: str
    process: str


def _credentials(url: str) -> tuple[str, str, str]:
    """(user, password, vhost) of an ``amqp://`` URL, as RabbitMQ reads them."""
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if parts.path not in ("", "/") else "/"
    return unquote(parts.username or "guest"), unquote(parts.password or "guest"), vhost


def broker_users(settings: Settings) -> list[BrokerUser]:
    """The users to create: one per process whose own ``*_AMQP_URL`` is set and names a
    user other than the administrator's (``MIGRATE_AMQP_URL``, else ``AMQP_URL``); a
    process without one shares ``AMQP_URL``'s user, which is not its own to create. Two
    processes may not share a user: its permissions would be one process's or the other's.
    """
    admin, _, _ = _credentials(settings.amqp_url_for("migrate").get_secret_value())
    users: dict[str, BrokerUser] = {}
    for process in PROCESSES:
        own: SecretStr = getattr(settings, f"{process}_amqp_url")
        if not own.get_secret_value():
            continue
        name, password, vhost = _credentials(own.get_secret_value())
        if name == admin:
            continue
        if name in users:
            raise ProvisionError(
                f"RabbitMQ user {name!r} is named by both {users[name].process.upper()}_AMQP_URL"
                f" and {process.upper()}_AMQP_URL: give each process a user of its own"
            )
        users[name] = BrokerUser(name, password, vhost, process)
    return list(users.values())


async def provision(
    management_url: str,
    admin_url: str,
    users: list[BrokerUser],
    *,
    namespace: str,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> None:
    """Create or update ``users`` and their permissions on the exchanges and queues of
    ``namespace``, through the management API at ``management_url`` as ``admin_url``'s
    user."""
    admin, admin_password, _ = _credentials(admin_url)
    base = management_url.rstrip("/")
    secrets = [admin_password, *(user.password for user in users)]
    async with aiohttp.ClientSession(
        auth=aiohttp.BasicAuth(admin, admin_password),
        timeout=aiohttp.ClientTimeout(total=request_timeout_s),
    ) as session:
        for user in users:
            configure, write, read = permissions(user.process, re.escape(namespace))
            name = quote(user.name, safe="")
            calls = (
                (f"/api/users/{name}", {"password": user.password, "tags": ""}),
                (
                    f"/api/permissions/{quote(user.vhost, safe='')}/{name}",
                    {"configure": configure, "write": write, "read": read},
                ),
            )
            for path, body in calls:
                what = f"RabbitMQ user {user.name!r} ({path.split('/')[2]})"
                try:
                    await _put(session, base + path, body, what)
                except Exception as exc:  # HTTP errors, timeouts, a bad URL
                    detail = str(exc) if isinstance(exc, ProvisionError) else _describe(exc)
                    raise ProvisionError(
                        _one_line(f"{what} at {redact_url(base)}: {detail}", secrets)
                    ) from None


async def _put(session: aiohttp.ClientSession, url: str, body: dict[str, str], what: str) -> None:
    """PUT ``body``; a refused connection is tried again for ``CONNECT_WAIT_S``: the
    broker's health check passes once AMQP listens, the management API starts a moment
    later (compose starts ``migrate`` then)."""
    deadline = time.monotonic() + CONNECT_WAIT_S
    while True:
        try:
            async with session.put(url, json=body) as response:
                if response.status >= 300:
                    reason = _reason(await response.text())
                    raise ProvisionError(f"HTTP {response.status} {response.reason}{reason}")
                return
        except aiohttp.ClientConnectorError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(1.0)


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reason(text: str) -> str:
    """The management API's ``reason`` (a short JSON field), if it gave one."""
    match = re.search(r'"reason"\s*:\s*"([^"]{1,200})"', text)
    return f" ({match.group(1)})" if match else ""


def _one_line(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())
