"""Migrations against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared import db
from tests.plugins import rows

pytestmark = pytest.mark.integration


async def test_migrations_run_concurrently_on_an_empty_database(db_url: str) -> None:
    con = await asyncpg.connect(db_url)
    try:
        # Start from nothing: drop what the template brought.
        await con.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await con.close()
    a, b = await db.create_pool(db_url), await db.create_pool(db_url)
    try:
        applied = await asyncio.gather(db.migrate(a), db.migrate(b))
        names = [p.name for p in db.migration_files()]
        # Exactly one of the two applied everything; the other found nothing to do.
        assert sorted(applied, key=len) == [[], names]
        assert await db.migrate(a) == []
        tables = await a.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'models'"
        )
        assert tables == 1
    finally:
        await a.close()
        await b.close()


async def test_request_status_changes_notify_watchers(pool: db.Pool) -> None:
    import uuid

    got: asyncio.Queue[str] = asyncio.Queue()
    con = await pool.acquire()
    try:
        await con.add_listener("chouette_requests", lambda *args: got.put_nowait(args[3]))
        request_id = uuid.uuid4()
        await db.ensure_request(pool, request_id, "training", {"a": 1})
        await db.set_stage(pool, request_id, "fetching", "fetching 1/3")
        first = await asyncio.wait_for(got.get(), 5)
        second = await asyncio.wait_for(got.get(), 5)
        assert '"queued"' in first
        assert "fetching 1/3" in second
    finally:
        await pool.release(con)


async def test_final_status_is_not_overwritten_by_a_redelivery(pool: db.Pool) -> None:
    import uuid

    request_id = uuid.uuid4()
    await db.ensure_request(pool, request_id, "training", {})
    await db.record_failure(
        pool, request_id=request_id, queue="fetcher", stage="fetching", error="boom"
    )
    await db.set_stage(pool, request_id, "training", "training 1/3")
    assert await rows.request_status(pool, request_id) == "failed"
