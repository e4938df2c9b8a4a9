"""``python -m shared.healthcheck``: a service container's health check (docker-compose.yml).

Healthy when PostgreSQL (``DATABASE_URL``) answers ``SELECT 1`` and RabbitMQ
(``AMQP_URL``) accepts a connection, each within a few seconds: what every service
needs to make progress. Exit 0 healthy, 1 not (one line on stderr, no password).
"""

from __future__ import annotations

import asyncio
import sys

from shared.settings import Settings, redact_url

TIMEOUT_S = 5.0


async def check(settings: Settings) -> None:
    import aio_pika
    import asyncpg

    con = await asyncpg.connect(settings.database_url.get_secret_value(), timeout=TIMEOUT_S)
    try:
        await con.fetchval("SELECT 1")
    finally:
        await con.close()
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value(), timeout=TIMEOUT_S)
    await connection.close()


def main() -> int:
    settings = Settings()
    try:
        asyncio.run(asyncio.wait_for(check(settings), 2 * TIMEOUT_S))
    except Exception as exc:
        print(
            f"unhealthy: {type(exc).__name__} (database {redact_url(settings.database_url)},"
            f" broker {redact_url(settings.amqp_url)})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
