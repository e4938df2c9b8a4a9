"""What ``chouette prune`` removes, and all of its SQL.

Three kinds of data outlive their use:

- **checkpoints** of trainings that ended: a model trained, failed or corrupt, or whose
  request ended (succeeded or failed), with no live training lease. A trained model's own
  weights are stored apart; checkpoints only serve to resume a training.
- **weights** of models that are not the champion of their class set and were trained
  more than ``weights_after_days`` days ago. The model's row, metrics, epochs and
  evaluations stay; ``models.weights_pruned_at`` records the removal, and loading such a
  model says so.
- **images** that no dataset references (a fetch that failed before its dataset was
  written, or superseded data), neither any stored prediction, and older than
  ``IMAGE_GRACE``: a fetch in progress stores its images before its dataset row.

:func:`plan` counts them (the dry run); :func:`apply` removes them, each kind in one
transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

Con: TypeAlias = asyncpg.Connection | asyncpg.Pool

IMAGE_GRACE = dt.timedelta(days=1)

# The models whose training ended (trained, failed, corrupt, or its request ended) and
# whose lease is not live; the same condition in the count and in the delete.
_CHECKPOINTS_COUNT = """
    SELECT count(DISTINCT c.model_id) AS n, coalesce(sum(length(c.bytes)), 0) AS b
    FROM model_checkpoints c JOIN models m ON m.id = c.model_id
    JOIN training_requests r ON r.id = m.request_id
    WHERE (m.status IN ('trained', 'failed', 'corrupt') OR r.status IN ('succeeded', 'failed'))
      AND (m.lease_until IS NULL OR m.lease_until < now())
"""
_CHECKPOINTS_DELETE = """
    DELETE FROM model_checkpoints c USING models m, training_requests r
    WHERE m.id = c.model_id AND r.id = m.request_id
      AND (m.status IN ('trained', 'failed', 'corrupt') OR r.status IN ('succeeded', 'failed'))
      AND (m.lease_until IS NULL OR m.lease_until < now())
"""
# Trained models that are not a champion, trained more than $1 seconds ago.
_WEIGHTS_COUNT = """
    SELECT count(DISTINCT w.model_id) AS n, coalesce(sum(length(w.bytes)), 0) AS b
    FROM model_weights w JOIN models m ON m.id = w.model_id
    WHERE m.status = 'trained' AND m.weights_pruned_at IS NULL
      AND m.trained_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM champions c WHERE c.model_id = m.id)
"""
_WEIGHTS_LOCK = """
    SELECT m.id FROM models m
    WHERE m.status = 'trained' AND m.weights_pruned_at IS NULL
      AND m.trained_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM champions c WHERE c.model_id = m.id)
    FOR UPDATE OF m
"""
# Images in no dataset and no prediction, stored more than $1 seconds ago.
_IMAGES_COUNT = """
    SELECT count(*) AS n, coalesce(sum(i.byte_size), 0) AS b FROM images i
    WHERE i.created_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM dataset_images d WHERE d.sha256 = i.sha256)
      AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.sha256 = i.sha256)
"""
_IMAGES_LOCK = """
    SELECT i.sha256 FROM images i
    WHERE i.created_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM dataset_images d WHERE d.sha256 = i.sha256)
      AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.sha256 = i.sha256)
    FOR UPDATE OF i
"""


@dataclass(frozen=True)
class Item:
    """One kind of data to remove: how many rows of what, and their bytes."""

    kind: str
    count: int
    nbytes: int


@dataclass(frozen=True)
class Plan:
    checkpoints: Item  # count: models whose checkpoints go
    weights: Item  # count: models whose weights go
    images: Item

    @property
    def items(self) -> tuple[Item, Item, Item]:
        return (self.checkpoints, self.weights, self.images)


def _seconds(days: float) -> float:
    return float(days) * 86400.0


async def plan(con: Con, *, weights_after_days: float) -> Plan:
    """What :func:`apply` would remove now."""
    checkpoints = await con.fetchrow(_CHECKPOINTS_COUNT)
    weights = await con.fetchrow(_WEIGHTS_COUNT, _seconds(weights_after_days))
    images = await con.fetchrow(_IMAGES_COUNT, IMAGE_GRACE.total_seconds())
    return Plan(
        Item("checkpoints", int(checkpoints["n"]), int(checkpoints["b"])),
        Item("weights", int(weights["n"]), int(weights["b"])),
        Item("images", int(images["n"]), int(images["b"])),
    )


async def apply(pool: asyncpg.Pool, *, weights_after_days: float) -> Plan:
    """Remove what :func:`plan` lists; returns what it listed just before."""
    removed = await plan(pool, weights_after_days=weights_after_days)
    async with pool.acquire() as con, con.transaction():
        await con.execute(_CHECKPOINTS_DELETE)
    async with pool.acquire() as con, con.transaction():
        rows = await con.fetch(_WEIGHTS_LOCK, _seconds(weights_after_days))
        ids = [r["id"] for r in rows]
        await con.execute("DELETE FROM model_weights WHERE model_id = ANY($1::bigint[])", ids)
        await con.execute(
            "UPDATE models SET weights_pruned_at = now() WHERE id = ANY($1::bigint[])", ids
        )
    async with pool.acquire() as con, con.transaction():
        rows = await con.fetch(_IMAGES_LOCK, IMAGE_GRACE.total_seconds())
        shas = [r["sha256"] for r in rows]
        await con.execute("DELETE FROM image_sources WHERE sha256 = ANY($1::text[])", shas)
        await con.execute("DELETE FROM images WHERE sha256 = ANY($1::text[])", shas)
    return removed
