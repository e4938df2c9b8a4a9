"""PostgreSQL access shared by every service: the pool, migrations, request status.

Each service keeps the rest of its SQL in one module of its own; this module holds
only what all of them need: creating the pool, applying the numbered migrations in
``shared/migrations/`` under an advisory lock (safe when several services start at
once), and writing a request's status, stage, progress and failure (the table
triggers ``NOTIFY`` watchers).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg

from shared import privileges
from shared.errors import RetryableError
from shared.messages import truncate
from shared.request_state import FINAL, Progress, Stage, Status
from shared.settings import Settings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant shared by all services; two processes migrating at once serialize on it.
_MIGRATION_LOCK_KEY = 0x43484F55  # "CHOU"

# What a failure row keeps of the message that failed.
MAX_BODY_BYTES = 10_000

Pool: TypeAlias = asyncpg.Pool
Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def _init_connection(con: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await con.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 5) -> Pool:
    """A pool whose connections decode json/jsonb to Python objects."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise RetryableError(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection outside any pool, decoding json/jsonb like the pool's."""
    con = await asyncpg.connect(dsn)
    await _init_connection(con)
    return con


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.sql"))


async def migrate(pool_or_con: Pool | asyncpg.Connection, *, grants: bool = False) -> list[str]:
    """Apply the migrations not applied yet, in order; return the names applied now.

    After any migration applied now, or always with ``grants`` (``chouette migrate``), the
    group roles' privileges are set again (:mod:`shared.privileges`): a new table gets its
    grants in the same run, and roles provisioned since the last run get theirs.
    """
    if isinstance(pool_or_con, asyncpg.Connection):
        return await _migrate(pool_or_con, grants)
    async with pool_or_con.acquire() as con:
        return await _migrate(con, grants)


async def migrate_at(dsn: str, *, grants: bool = False) -> list[str]:
    """:func:`migrate` on a connection of its own to ``dsn`` (the migration role's URL,
    which the pools of a restricted process do not use)."""
    try:
        con = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RetryableError(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        return await migrate(con, grants=grants)
    finally:
        await con.close()


async def migrate_if_asked(settings: Settings, pool: Pool, dsn: str) -> None:
    """With ``AUTO_MIGRATE`` (the default), apply pending migrations as the migration role:
    on ``pool`` when the process connects as that role anyway (one ``DATABASE_URL``), else
    on a connection of its own. Without it, the schema is ``chouette migrate``'s business
    and a restricted role never tries DDL."""
    if not settings.auto_migrate:
        return
    migrate_dsn = settings.database_url_for("migrate").get_secret_value()
    if migrate_dsn == dsn:
        await migrate(pool)
    else:
        await migrate_at(migrate_dsn)


async def _migrate(con: asyncpg.Connection, grants: bool) -> list[str]:
    applied_now: list[str] = []
    await con.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await con.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files():
            if path.name in done:
                continue
            async with con.transaction():
                await con.execute(path.read_text())
                await con.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied_now.append(path.name)
            logger.info("applied migration %s", path.name)
        if applied_now or grants:
            await privileges.apply(con)
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied_now


async def ensure_request(
    con: Executor,
    request_id: uuid.UUID,
    kind: str,
    params: Mapping[str, Any],
) -> None:
    """Insert the request row if it is not there yet (the CLI usually inserted it)."""
    await con.execute(
        "INSERT INTO training_requests (id, kind, params) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO NOTHING",
        request_id,
        kind,
        dict(params),
    )


async def set_stage(
    con: Executor,
    request_id: uuid.UUID,
    stage: Stage,
    progress: Progress | str | None = None,
    *,
    status: Status = Status.RUNNING,
    **ids: int,
) -> None:
    """Move a request to ``stage`` (and optionally record dataset/model/evaluation ids).

    A request already ``failed`` or ``succeeded`` keeps its final status: a redelivered
    message must not resurrect it.
    """
    allowed = {"dataset_id", "model_id", "evaluation_id"}
    unknown = set(ids) - allowed
    if unknown:
        raise ValueError(f"unknown id columns: {sorted(unknown)}")
    if isinstance(progress, str):
        progress = Progress(progress)
    sets = [
        "stage = $2",
        "progress = $3",
        "progress_done = $4",
        "progress_total = $5",
        "status = $6",
        "updated_at = now()",
    ]
    args: list[Any] = [request_id, Stage(stage).value, *_progress_columns(progress)]
    args.append(Status(status).value)
    for column in sorted(ids):  # column names come from the fixed set above
        args.append(ids[column])
        sets.append(f"{column} = ${len(args)}")
    if status in FINAL:
        sets.append("finished_at = now()")
    await con.execute(
        f"UPDATE training_requests SET {', '.join(sets)}"  # noqa: S608
        " WHERE id = $1 AND status NOT IN ('succeeded', 'failed')",
        *args,
    )


async def set_progress(con: Executor, request_id: uuid.UUID, progress: Progress) -> None:
    await con.execute(
        "UPDATE training_requests SET progress = $2, progress_done = $3, progress_total = $4,"
        " updated_at = now()"
        " WHERE id = $1 AND status NOT IN ('succeeded', 'failed')",
        request_id,
        *_progress_columns(progress),
    )


def _progress_columns(progress: Progress | None) -> tuple[str | None, int | None, int | None]:
    if progress is None:
        return None, None, None
    return progress.text, progress.done, progress.total


async def record_failure(
    pool: Pool,
    *,
    request_id: uuid.UUID | None,
    queue: str,
    stage: str,
    error: str,
    body: bytes | None = None,
) -> None:
    """Mark the request ``failed`` with its stage and error, and log the failure row.

    A request with no row yet (a message published by hand, or whose row was deleted) gets
    one, ``failed``: ``chouette status ID`` must say why, not "no request matches". Both
    the error and the stored body are cut to a bounded length.
    """
    # PostgreSQL text cannot hold NUL: a poison body must still leave its failure row.
    text = (
        body[:MAX_BODY_BYTES].decode("utf-8", "replace").replace("\x00", "\\x00") if body else None
    )
    error = truncate(error.replace("\x00", "\\x00"))
    async with pool.acquire() as con, con.transaction():
        await con.execute(
            "INSERT INTO failures (request_id, queue, stage, error, body)"
            " VALUES ($1, $2, $3, $4, $5)",
            request_id,
            queue,
            stage,
            error,
            text,
        )
        if request_id is not None:
            kind, params = _unrecorded_request(body)
            await con.execute(
                "INSERT INTO training_requests (id, kind, params) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO NOTHING",
                request_id,
                kind,
                params,
            )
            await con.execute(
                "UPDATE training_requests SET status = 'failed', stage = $2, error = $3,"
                " updated_at = now(), finished_at = now()"
                " WHERE id = $1 AND status <> 'succeeded'",
                request_id,
                stage,
                error,
            )


def _unrecorded_request(body: bytes | None) -> tuple[str, dict[str, Any]]:
    """The kind and parameters of a request known only by the message that failed: the
    message itself when it is a small JSON object, else nothing but its kind (a guess:
    ``training`` unless the message says evaluation)."""
    message: Any = None
    if body and len(body) <= MAX_BODY_BYTES and b"\\u0000" not in body:
        try:
            message = json.loads(body)
            json.dumps(message, ensure_ascii=False).encode()  # jsonb refuses lone surrogates
        except (ValueError, RecursionError):  # UnicodeError is a ValueError
            message = None
    if not isinstance(message, dict):
        return "training", {}
    evaluation = message.get("type") in ("EvaluationRequested", "EvaluationDatasetReady") or (
        message.get("purpose") == "evaluation"  # a DatasetReady of an earlier version
    )
    return ("evaluation" if evaluation else "training"), message
