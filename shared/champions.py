"""Which model is champion: the rule's SQL, shared by the evaluator (after each
evaluation), the CLI (``chouette champion --reference``, ``chouette promote``) and the API
(which serves the champion).

The rule, per class set (``'grass,ground,vine'``):

1. **Promoted by hand** (``chouette promote MODEL``): that model is the champion of its
   class set; no evaluation replaces it, until another model is promoted or a reference
   range is pinned.
2. **Reference range pinned** (``chouette champion --reference START END``): the champion
   is the best macro F1 among the evaluations of that date range (datasets with exactly
   those dates, every image of the range: split ``all``, training images left out). Pinning
   decides at once on the evaluations already there; afterwards an evaluation of the
   reference range replaces the champion when it beats the champion's figure on the same
   dataset by the promotion margin (``EVALUATOR_PROMOTION_MARGIN``), or when the champion
   was not chosen on the reference; evaluations of other ranges change nothing.
3. **Neither** (the default): models are compared on a shared evaluation dataset (the same
   dataset and split); the first evaluated model of a class set becomes champion, and a
   model replaces it when it beats the champion on a dataset both were scored on by the
   margin.

Every change is a ``champion_history`` row with its reason (``evaluation``, ``reference``,
``promoted``) and a ``chouette_champions`` notification (trigger, migration 044). Decisions
of one class set are serialized by a transaction-level advisory lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

# First key of the two-int advisory lock taken around a champion decision ("EV").
LOCK_NAMESPACE = 0x4556
EVALUATION, REFERENCE, PROMOTED = "evaluation", "reference", "promoted"


class NotPromotable(Exception):
    """The model does not exist or is not trained (one line for the user)."""


@dataclass(frozen=True)
class Change:
    class_set: str
    model_id: int
    reason: str
    evaluation_id: int | None
    macro_f1: float | None
    previous_model_id: int | None
    previous_macro_f1: float | None


def class_set(class_names: Sequence[str]) -> str:
    """The champion key: sorted class names joined by commas (same as SQL ``class_set()``)."""
    return ",".join(sorted(class_names))


async def lock(con: asyncpg.Connection, key: str) -> None:
    await con.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_NAMESPACE, key)


async def current(con: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    """The champion row of ``key``, locked for this transaction."""
    return await con.fetchrow(
        "SELECT model_id, reason, evaluation_id, macro_f1 FROM champions WHERE class_set = $1"
        " FOR UPDATE",
        key,
    )


async def reference(con: asyncpg.Connection | asyncpg.Pool) -> tuple[dt.date, dt.date] | None:
    row = await con.fetchrow("SELECT start_date, end_date FROM champion_reference")
    return None if row is None else (row["start_date"], row["end_date"])


async def on_reference(con: asyncpg.Connection, dataset_id: int, split: str) -> bool:
    """Is an evaluation of (``dataset_id``, ``split``) one of the pinned reference range?"""
    return bool(
        await con.fetchval(
            "SELECT EXISTS (SELECT 1 FROM datasets d JOIN champion_reference r"
            " ON r.start_date = d.start_date AND r.end_date = d.end_date"
            " WHERE d.id = $1 AND $2 = 'all')",
            dataset_id,
            split,
        )
    )


async def record(con: asyncpg.Connection, key: str, change: Change) -> None:
    """Make ``change.model_id`` the champion of ``key`` and write the history row."""
    await con.execute(
        "INSERT INTO champions (class_set, model_id, evaluation_id, macro_f1, reason)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (class_set) DO UPDATE SET"
        " model_id = EXCLUDED.model_id, evaluation_id = EXCLUDED.evaluation_id,"
        " macro_f1 = EXCLUDED.macro_f1, reason = EXCLUDED.reason, promoted_at = now()",
        key,
        change.model_id,
        change.evaluation_id,
        change.macro_f1,
        change.reason,
    )
    await con.execute(
        "INSERT INTO champion_history (class_set, model_id, previous_model_id, evaluation_id,"
        " macro_f1, previous_macro_f1, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        key,
        change.model_id,
        change.previous_model_id,
        change.evaluation_id,
        change.macro_f1,
        change.previous_macro_f1,
        change.reason,
    )


async def pin_reference(pool: asyncpg.Pool, start: dt.date, end: dt.date) -> list[Change]:
    """Pin the reference range and choose each class set's champion on its evaluations
    (those already there); returns the changes made (none when nothing was evaluated)."""
    changes = []
    async with pool.acquire() as con, con.transaction():
        await con.execute(
            "INSERT INTO champion_reference (start_date, end_date) VALUES ($1, $2)"
            " ON CONFLICT (only_one) DO UPDATE SET start_date = EXCLUDED.start_date,"
            " end_date = EXCLUDED.end_date, pinned_at = now()",
            start,
            end,
        )
        best = await con.fetch(
            "SELECT DISTINCT ON (class_set(e.class_names)) class_set(e.class_names) AS key,"
            " e.id, e.model_id, e.macro_f1"
            " FROM evaluations e JOIN models m ON m.id = e.model_id"
            " JOIN datasets d ON d.id = e.dataset_id"
            " WHERE d.start_date = $1 AND d.end_date = $2 AND e.split = 'all'"
            " AND e.macro_f1 IS NOT NULL AND e.n_excluded IS NOT NULL AND m.status = 'trained'"
            " ORDER BY class_set(e.class_names), e.macro_f1 DESC, e.created_at, e.id",
            start,
            end,
        )
        for row in best:
            key = row["key"]
            await lock(con, key)
            champion = await current(con, key)
            if (
                champion is not None
                and champion["model_id"] == row["model_id"]
                and champion["reason"] == REFERENCE
                and champion["evaluation_id"] == row["id"]
            ):
                continue
            change = Change(
                class_set=key,
                model_id=row["model_id"],
                reason=REFERENCE,
                evaluation_id=row["id"],
                macro_f1=row["macro_f1"],
                previous_model_id=None if champion is None else champion["model_id"],
                previous_macro_f1=None if champion is None else champion["macro_f1"],
            )
            await record(con, key, change)
            changes.append(change)
    return changes


async def unpin_reference(pool: asyncpg.Pool) -> bool:
    """Back to the default rule (champions stay until an evaluation replaces them)."""
    return (await pool.execute("DELETE FROM champion_reference")) != "DELETE 0"


async def promote(pool: asyncpg.Pool, model_id: int) -> Change:
    """Make ``model_id`` the champion of its class set by hand."""
    async with pool.acquire() as con, con.transaction():
        model = await con.fetchrow("SELECT status, class_names FROM models WHERE id = $1", model_id)
        if model is None:
            raise NotPromotable(f"no model {model_id} (see `chouette models`)")
        if model["status"] != "trained":
            raise NotPromotable(f"model {model_id} is {model['status']}, not trained")
        key = class_set(model["class_names"])
        await lock(con, key)
        champion = await current(con, key)
        change = Change(
            class_set=key,
            model_id=model_id,
            reason=PROMOTED,
            evaluation_id=None,
            macro_f1=None,
            previous_model_id=None if champion is None else champion["model_id"],
            previous_macro_f1=None if champion is None else champion["macro_f1"],
        )
        await record(con, key, change)
    return change


async def board(con: asyncpg.Connection | asyncpg.Pool) -> dict[str, Any]:
    """The reference range (or None) and the champion of each class set."""
    ref = await reference(con)
    rows = await con.fetch(
        "SELECT class_set, model_id, architecture, macro_f1, reason, eval_dataset_id,"
        " eval_start_date, eval_end_date, promotions, promoted_at FROM champion_board"
    )
    return {
        "reference": None if ref is None else {"start_date": ref[0], "end_date": ref[1]},
        "champions": [dict(r) for r in rows],
    }
