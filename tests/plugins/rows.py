"""Small reads of pipeline rows that tests assert on (the product never needs them)."""

from __future__ import annotations

import uuid

import asyncpg


async def request_status(
    con: asyncpg.Pool | asyncpg.Connection, request_id: uuid.UUID
) -> str | None:
    """The request's status, or None when it has no row."""
    value = await con.fetchval("SELECT status FROM training_requests WHERE id = $1", request_id)
    return None if value is None else str(value)


async def checkpoint_epochs(con: asyncpg.Pool | asyncpg.Connection, model_id: int) -> list[int]:
    """The epochs that have a stored checkpoint for ``model_id``, in order."""
    rows = await con.fetch(
        "SELECT DISTINCT epoch FROM model_checkpoints WHERE model_id = $1 ORDER BY epoch",
        model_id,
    )
    return [int(r["epoch"]) for r in rows]
