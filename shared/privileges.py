"""Least privilege in PostgreSQL: one NOLOGIN group role per process, and its grants.

Only the migration role (``MIGRATE_DATABASE_URL``, by default ``DATABASE_URL``) owns the
schema and runs DDL. Every other process connects as a login role that is a member of one
of the group roles below, and can do exactly what its own SQL needs (derived from its
``store.py`` and the shared modules it calls):

- ``chouette_fetcher`` writes images, their sources and datasets; of ``models`` it reads
  three columns (the dataset and classes of a model to evaluate), and it has no access at
  all to ``model_weights``, ``model_checkpoints``, evaluations or champions;
- ``chouette_trainer`` reads datasets and images, writes models, epochs, checkpoints and
  weights;
- ``chouette_evaluator`` reads datasets, images, models and weights (never writes weights),
  writes evaluations, predictions and champion decisions, and may mark a model corrupt;
- ``chouette_reader`` reads everything and writes nothing (``status``, ``watch``,
  ``models``, ``report``, ``export``, ``predict``, ``explain``, the prediction API);
- ``chouette_cli`` is a reader that may also submit requests (``train``, ``evaluate``),
  pin and promote champions (``promote``) and remove old weights, checkpoints and images
  (``prune``).

The three services and the CLI write a request's status, failures and (through the
``training_requests`` trigger) its timeline. :func:`apply` makes the grants exactly these
(it revokes first), so it is idempotent; :func:`shared.db.migrate` runs it after it applied
a migration and ``chouette migrate`` runs it every time. A migration that adds a table or
view adds it here for the roles that use it (the reader reads every relation by itself);
``tests/integration/shared/test_privileges.py`` states every role's privileges on every
relation, and the services' tests, run as these roles, fail on a missing grant.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import asyncpg

logger = logging.getLogger(__name__)

FETCHER = "chouette_fetcher"
TRAINER = "chouette_trainer"
EVALUATOR = "chouette_evaluator"
READER = "chouette_reader"
CLI = "chouette_cli"
GROUP_ROLES = (FETCHER, TRAINER, EVALUATOR, READER, CLI)

# What every process that handles requests writes: status and stage (shared.db), failure
# rows, and the timeline rows the training_requests trigger inserts as the writer.
_REQUESTS = {
    "training_requests": "SELECT, INSERT, UPDATE",
    "failures": "INSERT",
    "request_events": "INSERT",
}

# role -> relation -> privileges (a parenthesised column list limits them to columns).
GRANTS: Mapping[str, Mapping[str, str]] = {
    FETCHER: {
        **_REQUESTS,
        "images": "SELECT, INSERT, UPDATE",
        "image_sources": "SELECT, INSERT, UPDATE",
        "datasets": "SELECT, INSERT",
        "dataset_images": "SELECT, INSERT",
        "models": "SELECT (id, dataset_id, class_names)",
    },
    TRAINER: {
        **_REQUESTS,
        "datasets": "SELECT",
        "dataset_images": "SELECT",
        "images": "SELECT",
        "models": "SELECT, INSERT, UPDATE",
        "training_epochs": "SELECT, INSERT, UPDATE, DELETE",
        "model_checkpoints": "SELECT, INSERT, DELETE",
        "model_weights": "SELECT, INSERT, DELETE",
    },
    EVALUATOR: {
        **_REQUESTS,
        "datasets": "SELECT",
        "dataset_images": "SELECT",
        "images": "SELECT",
        "models": "SELECT, UPDATE (status)",
        "model_weights": "SELECT",
        "evaluations": "SELECT, INSERT",
        "predictions": "SELECT, INSERT",
        # FOR UPDATE of the champion row and the upsert need UPDATE.
        "champions": "SELECT, INSERT, UPDATE",
        "champion_history": "SELECT, INSERT",
        "champion_reference": "SELECT",
        "champion_board": "SELECT",
    },
    CLI: {
        **_REQUESTS,
        # promote / unpin
        "champions": "SELECT, INSERT, UPDATE",
        "champion_history": "SELECT, INSERT",
        "champion_reference": "SELECT, INSERT, UPDATE, DELETE",
        # prune
        "models": "SELECT, UPDATE (weights_pruned_at)",
        "model_weights": "SELECT, DELETE",
        "model_checkpoints": "SELECT, DELETE",
        "images": "SELECT, UPDATE, DELETE",
        "image_sources": "SELECT, DELETE",
    },
}

# Roles that insert rows into tables with a sequence (identity or serial ids).
_SEQUENCE_USERS = (FETCHER, TRAINER, EVALUATOR, CLI)


async def relations(con: asyncpg.Connection) -> list[str]:
    """Tables and views of the schema (what the reader role may read)."""
    rows = await con.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'p')"
        " ORDER BY c.relname"
    )
    return [r["relname"] for r in rows]


async def ensure_group_roles(con: asyncpg.Connection) -> list[str]:
    """Create the missing group roles (NOLOGIN) when this role may; return those that
    exist. A migration role without CREATEROLE (one owner URL on a managed server) leaves
    them to whoever provisions the database, and the grants to them wait until then."""
    existing = {
        r["rolname"]
        for r in await con.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", list(GROUP_ROLES)
        )
    }
    for role in GROUP_ROLES:
        if role in existing:
            continue
        try:
            async with con.transaction():
                await con.execute(f'CREATE ROLE "{role}" NOLOGIN')
        except (asyncpg.InsufficientPrivilegeError, asyncpg.DuplicateObjectError) as exc:
            if isinstance(exc, asyncpg.DuplicateObjectError):  # created meanwhile
                existing.add(role)
                continue
            logger.warning("cannot create role %s (%s): its grants wait for it", role, exc)
            continue
        existing.add(role)
    return [role for role in GROUP_ROLES if role in existing]


async def apply(con: asyncpg.Connection) -> list[str]:
    """Make each existing group role's privileges exactly those above; return the roles."""
    roles = await ensure_group_roles(con)
    names = await relations(con)
    async with con.transaction():
        await _no_public_create(con)
        for role in roles:
            await con.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"')
            await con.execute(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM "{role}"')
            await con.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
            if role == READER:
                for name in names:
                    await con.execute(f'GRANT SELECT ON "{name}" TO "{role}"')
                continue
            if role == CLI and READER in roles:
                await _cli_reads(con)
            for relation, privileges in GRANTS[role].items():
                await con.execute(f'GRANT {privileges} ON "{relation}" TO "{role}"')
            if role in _SEQUENCE_USERS:
                await con.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    return roles


async def _no_public_create(con: asyncpg.Connection) -> None:
    """PostgreSQL before 15 lets every role create objects in ``public``; take that back
    when this role may (it owns the schema), else leave it to the server's administrator."""
    try:
        async with con.transaction():
            await con.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    except asyncpg.InsufficientPrivilegeError:
        logger.warning("cannot revoke CREATE on schema public from PUBLIC (not its owner)")


async def _cli_reads(con: asyncpg.Connection) -> None:
    """Make the CLI's role a member of the reader's. From PostgreSQL 16 on, CREATEROLE alone
    may not grant a role this one did not create: then the provisioning (``chouette
    services up``, deploy/postgres-roles.sh) has done it, as a superuser."""
    if await con.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", CLI, READER):
        return
    try:
        async with con.transaction():
            await con.execute(f'GRANT "{READER}" TO "{CLI}"')
    except asyncpg.InsufficientPrivilegeError:
        logger.warning("cannot make %s a member of %s: grant it as a superuser", CLI, READER)
