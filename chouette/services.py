"""``chouette services up|down|status``: local RabbitMQ + PostgreSQL (localstack.servers)."""

from __future__ import annotations

import sys

from chouette.errors import FAILED, OK, CommandFailed
from localstack import servers
from shared.settings import Settings


def run_services(action: str) -> int:
    settings = Settings()
    try:
        if action == "up":
            for name in servers.up(settings):
                print(f"applied {name}")
        elif action == "down":
            servers.down(settings)
    except Exception as exc:  # the module explains what is missing; show it on one line
        raise CommandFailed(f"services {action}: {exc}") from None
    health = servers.status(settings)
    for name, healthy in health.items():
        print(f"{name:<10} {'up' if healthy else 'down'}")
    if action == "down":
        still = [name for name, healthy in health.items() if healthy]
        if still:
            home = settings.chouette_home.resolve()
            print(
                f"chouette: {' and '.join(still)} still answer{'' if len(still) > 1 else 's'}"
                f" at the configured URLs but {'were' if len(still) > 1 else 'was'} not"
                f" started from {home} (CHOUETTE_HOME): run `chouette services down` with the"
                " CHOUETTE_HOME used to start them (a relative one is read from the current"
                " directory)",
                file=sys.stderr,
            )
            return FAILED
        return OK
    return OK if health and all(health.values()) else FAILED
