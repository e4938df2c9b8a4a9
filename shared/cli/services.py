"""``chouette services up|down|status``: local RabbitMQ + PostgreSQL (shared.local_services)."""

from __future__ import annotations

from shared.cli.app import FAILED, OK, CommandFailed


def run_services(action: str) -> int:
    from shared import local_services
    from shared.settings import Settings

    settings = Settings()
    try:
        if action == "up":
            local_services.up(settings)
        elif action == "down":
            local_services.down(settings)
    except Exception as exc:  # the module explains what is missing; show it on one line
        raise CommandFailed(f"services {action}: {exc}") from None
    health = local_services.status(settings)
    for name, healthy in health.items():
        print(f"{name:<10} {'up' if healthy else 'down'}")
    if action == "down":
        return OK if not any(health.values()) else FAILED
    return OK if health and all(health.values()) else FAILED
