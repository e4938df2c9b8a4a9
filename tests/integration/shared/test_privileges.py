"""Least privilege in PostgreSQL: each group role's grants, checked against the database.

The expected privileges are written out here, independently of ``shared.privileges``: this
is the table the README's guarantees state. Login roles come from ``tests/plugins/roles.py``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from chouette.app import run_command
from localstack import servers as local_services
from localstack.servers import free_port
from shared import db
from shared.settings import Settings
from tests.plugins.roles import Login

pytestmark = pytest.mark.integration

PRIVILEGES = {"S": "SELECT", "I": "INSERT", "U": "UPDATE", "D": "DELETE"}
NEVER = ("TRUNCATE", "REFERENCES", "TRIGGER")

_REQUESTS = {"training_requests": "SIU", "failures": "I", "request_events": "I"}
# role -> relation -> table-level privileges (absent: none at all).
EXPECTED: dict[str, dict[str, str]] = {
    "chouette_fetcher": {
        **_REQUESTS,
        "images": "SIU",
        "image_sources": "SIU",
        "datasets": "SI",
        "dataset_images": "SI",
    },
    "chouette_trainer": {
        **_REQUESTS,
        "datasets": "S",
        "dataset_images": "S",
        "images": "S",
        "models": "SIU",
        "training_epochs": "SIUD",
        "model_checkpoints": "SID",
        "model_weights": "SID",
    },
    "chouette_evaluator": {
        **_REQUESTS,
        "datasets": "S",
        "dataset_images": "S",
        "images": "S",
        "models": "S",
        "model_weights": "S",
        "evaluations": "SI",
        "predictions": "SI",
        "champions": "SIU",
        "champion_history": "SI",
        "champion_reference": "S",
        "champion_board": "S",
    },
}
# The reader reads every relation; the CLI is a reader that also writes these.
CLI_WRITES = {
    **_REQUESTS,
    "champions": "IU",
    "champion_history": "I",
    "champion_reference": "IUD",
    "model_weights": "D",
    "model_checkpoints": "D",
    "images": "UD",
    "image_sources": "D",
}


async def _relations(con: asyncpg.Connection) -> list[str]:
    rows = await con.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p')"
    )
    return sorted(r["relname"] for r in rows)


def _expected(role: str, relations: list[str]) -> dict[str, set[str]]:
    if role in EXPECTED:
        letters = EXPECTED[role]
    else:  # reader, cli
        letters = {name: "S" for name in relations}
        if role == "chouette_cli":
            for name, extra in CLI_WRITES.items():
                letters[name] = "S" + extra
    return {name: {PRIVILEGES[c] for c in letters.get(name, "")} for name in relations}


@pytest.fixture
async def con(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db_url)
    yield c
    await c.close()


@pytest.mark.parametrize(
    "role",
    [
        "chouette_fetcher",
        "chouette_trainer",
        "chouette_evaluator",
        "chouette_reader",
        "chouette_cli",
    ],
)
async def test_each_role_has_exactly_its_table_privileges(
    con: asyncpg.Connection, role: str
) -> None:
    relations = await _relations(con)
    assert "model_weights" in relations and "leaderboard" in relations
    unexpected = {name for name in EXPECTED.get(role, {}) if name not in relations}
    assert not unexpected, f"expected relations missing from the schema: {unexpected}"
    wrong = []
    for name, expected in _expected(role, relations).items():
        for privilege in (*PRIVILEGES.values(), *NEVER):
            held = await con.fetchval(
                "SELECT has_table_privilege($1, $2, $3)", role, name, privilege
            )
            if held != (privilege in expected):
                wrong.append(f"{privilege} on {name}: {'held' if held else 'missing'}")
    assert not wrong, f"{role}: {wrong}"
    # No group role may create anything: DDL is the migration role's alone.
    assert not await con.fetchval("SELECT has_schema_privilege($1, 'public', 'CREATE')", role)
    assert not await con.fetchval(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolcanlogin FROM pg_roles"
        " WHERE rolname = $1",
        role,
    )


async def test_column_grants_of_models(con: asyncpg.Connection) -> None:
    async def has(role: str, column: str, privilege: str) -> bool:
        return bool(
            await con.fetchval(
                "SELECT has_column_privilege($1, 'models', $2, $3)", role, column, privilege
            )
        )

    # The fetcher reads which dataset and classes a model has, nothing else of models.
    for column in ("id", "dataset_id", "class_names"):
        assert await has("chouette_fetcher", column, "SELECT")
    for column in ("weights_sha256", "hyperparams", "status"):
        assert not await has("chouette_fetcher", column, "SELECT")
    assert not await has("chouette_fetcher", "status", "UPDATE")
    # The evaluator may mark a model corrupt, and change nothing else of it.
    assert await has("chouette_evaluator", "status", "UPDATE")
    assert not await has("chouette_evaluator", "weights_sha256", "UPDATE")
    # The CLI's prune records which weights it removed.
    assert await has("chouette_cli", "weights_pruned_at", "UPDATE")
    assert not await has("chouette_cli", "weights_sha256", "UPDATE")


async def _as(login: Login, db_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(login.url(db_url))


async def test_a_fetcher_connection_cannot_delete_weights(
    db_url: str, role_logins: dict[str, Login]
) -> None:
    fetcher = await _as(role_logins["fetcher"], db_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await fetcher.execute("DELETE FROM model_weights")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await fetcher.fetch("SELECT bytes FROM model_weights")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await fetcher.execute("UPDATE models SET status = 'failed'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await fetcher.execute("CREATE TABLE planted (x int)")
        # What it needs works.
        assert await fetcher.fetchval("SELECT count(*) FROM images") == 0
    finally:
        await fetcher.close()


async def test_the_evaluator_cannot_write_weights_nor_the_reader_anything(
    db_url: str, role_logins: dict[str, Login]
) -> None:
    evaluator = await _as(role_logins["evaluator"], db_url)
    reader = await _as(role_logins["reader"], db_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await evaluator.execute("DELETE FROM model_weights")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await evaluator.execute(
                "INSERT INTO model_weights (model_id, part, bytes) VALUES (1, 0, '')"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute(
                "INSERT INTO training_requests (id, kind, params) VALUES (gen_random_uuid(),"
                " 'training', '{}')"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("DELETE FROM failures")
        assert await reader.fetchval("SELECT count(*) FROM model_weights") == 0
    finally:
        await evaluator.close()
        await reader.close()


async def test_migrate_sets_the_grants_on_a_new_database(
    db_url: str, settings: Settings, broker: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """``chouette migrate`` on an empty schema: tables, then the grants to each role, and
    the broker's exchanges and queues."""
    admin = await asyncpg.connect(db_url)
    try:
        await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        settings = settings.model_copy(
            update={"database_url": SecretStr("postgresql://nobody@127.0.0.1:1/x"),
                    "migrate_database_url": SecretStr(db_url)}
        )  # fmt: skip
        assert await run_command(argparse.Namespace(command="migrate"), settings=settings) == 0
        out = capsys.readouterr().out
        assert "applied 001_schema.sql" in out and "declared" in out
        assert await admin.fetchval(
            "SELECT has_table_privilege('chouette_evaluator', 'predictions', 'INSERT')"
        )
        assert not await admin.fetchval(
            "SELECT has_table_privilege('chouette_fetcher', 'model_weights', 'SELECT')"
        )
        assert await db.migrate(admin) == []
    finally:
        await admin.close()


async def test_read_only_commands_never_migrate(db_url: str) -> None:
    admin = await asyncpg.connect(db_url)
    try:
        await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        settings = Settings(_env_file=None, database_url=db_url)  # type: ignore[call-arg]
        args = argparse.Namespace(command="models", json=False, limit=20, all=False)
        with pytest.raises(Exception, match=r"models|relation"):
            await run_command(args, settings=settings)
        assert await admin.fetchval("SELECT to_regclass('public.schema_migrations')") is None
    finally:
        await admin.close()


def test_services_up_creates_a_login_role_per_process(tmp_path: Path) -> None:
    """``chouette services up`` with per-process URLs: an owner that is no superuser
    migrates and grants; each URL's login role is a member of its group role."""
    port = free_port()
    base = f"127.0.0.1:{port}/chouette"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        chouette_home=tmp_path,
        database_url=f"postgresql://owner:owner-pw@{base}",
        fetcher_database_url=f"postgresql://fetch:fetch-pw@{base}",
        cli_database_url=f"postgresql://cmd:cmd-pw@{base}",
    )
    _, postgres = local_services.servers(settings)
    postgres.durable = False
    try:
        applied = local_services.start_postgres(postgres)
        assert applied == [p.name for p in db.migration_files()]

        async def check() -> None:
            owner = await asyncpg.connect(settings.database_url.get_secret_value())
            fetcher = await asyncpg.connect(settings.database_url_for("fetcher").get_secret_value())
            cli = await asyncpg.connect(settings.database_url_for("cli").get_secret_value())
            try:
                assert not await owner.fetchval(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = 'owner'"
                )
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await fetcher.execute("DELETE FROM model_weights")
                assert await fetcher.fetchval("SELECT count(*) FROM images") == 0
                assert await cli.fetchval("SELECT count(*) FROM leaderboard") == 0  # a reader
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await cli.execute("DELETE FROM training_epochs")
            finally:
                for con in (owner, fetcher, cli):
                    await con.close()

        asyncio.run(check())
        assert local_services.start_postgres(postgres) == []  # again: nothing to do
    finally:
        postgres.stop()
