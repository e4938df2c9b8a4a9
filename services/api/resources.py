"""What the API opens at start-up and closes at shutdown: the pool (migrations applied),
the model server with the champion loaded, and the task that follows champion changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from services.api.app import Resources
from services.api.batching import Concurrency
from services.api.metrics import Metrics
from services.api.serving import ModelServer, ServedModel, follow_champion
from shared import db
from shared.runtime import connect_with_retry
from shared.settings import ApiSettings

logger = logging.getLogger(__name__)


def lifespan(  # type: ignore[no-untyped-def]
    database_url: str,
    settings: ApiSettings,
    *,
    recheck_s: float = 30.0,
    migrate_url: str | None = None,
):
    """The API's pool and model server; with ``migrate_url`` (``AUTO_MIGRATE``), pending
    migrations are applied first, as that role (the API's own only reads)."""

    @contextlib.asynccontextmanager
    async def open_resources(
        metrics: Metrics, concurrency: Concurrency
    ) -> AsyncIterator[Resources]:
        pool: db.Pool = await connect_with_retry(  # type: ignore[assignment]
            lambda: db.create_pool(database_url, max_size=5), "PostgreSQL"
        )
        server: ModelServer | None = None
        follower: asyncio.Task[None] | None = None
        try:
            if migrate_url == database_url:
                await db.migrate(pool)
            elif migrate_url is not None:
                await db.migrate_at(migrate_url)
            server = ModelServer(pool, settings, concurrency=concurrency)

            def on_champion(served: ServedModel) -> None:
                metrics.serving(served.model_id, served.spec.architecture)

            server.on_champion = on_champion
            server.on_batch = metrics.batch_images.observe
            try:
                await server.refresh_champion()  # ready to serve before the port opens
            except Exception as exc:  # /health says why; the follower tries again
                logger.warning("champion not loaded at start-up: %s", exc)
            follower = asyncio.create_task(
                follow_champion(lambda: asyncpg.connect(database_url), server, recheck_s=recheck_s)
            )
            yield Resources(pool, server)
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            if server is not None:
                server.close()
            await pool.close()

    return open_resources
