"""All SQL of the fetcher: content-addressed images, their sources, datasets, models.

Images are committed one by one as they arrive (a redelivered request resumes where it
stopped); a dataset and its manifest are committed together in one transaction.
Perceptual hashes are unsigned 64-bit integers in Python and signed ``bigint`` in SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

from services.fetcher.validation import ImageInfo
from shared.db import Pool

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

_BIT63 = 1 << 63
_BIT64 = 1 << 64


def phash_to_sql(phash: int | None) -> int | None:
    """An unsigned 64-bit hash as the signed value a ``bigint`` holds (same bits)."""
    return None if phash is None else phash - _BIT64 if phash >= _BIT63 else phash


def phash_from_sql(value: int | None) -> int | None:
    return None if value is None else value % _BIT64


@dataclass(frozen=True)
class ManifestRow:
    sha256: str
    tag: str
    source_url: str  # without its query string
    taken_at: dt.datetime | None
    split: str


@dataclass(frozen=True)
class DatasetRow:
    start_date: dt.date
    end_date: dt.date
    tags: Sequence[str]
    digest: str
    test_fraction: float
    val_fraction: float
    seed: int
    counts: Mapping[str, int]
    split_counts: Mapping[str, Mapping[str, int]]
    skipped: int
    rejected: Mapping[str, int]
    n_groups: int | None = None


async def known_sources(con: Executor, source_keys: Iterable[str]) -> dict[str, str]:
    """``{source_key: sha256}`` for the links whose image is already stored."""
    rows = await con.fetch(
        "SELECT source_key, sha256 FROM image_sources WHERE source_key = ANY($1::text[])",
        list(source_keys),
    )
    return {r["source_key"]: r["sha256"] for r in rows}


async def save_image(
    pool: Pool, *, sha256: str, data: bytes, info: ImageInfo, source_key: str
) -> None:
    """Store the image (once per content) and remember where it came from."""
    async with pool.acquire() as con, con.transaction():
        await con.execute(
            "INSERT INTO images (sha256, bytes, byte_size, width, height, format, phash)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (sha256) DO UPDATE"
            " SET phash = EXCLUDED.phash WHERE images.phash IS NULL",
            sha256,
            data,
            len(data),
            info.width,
            info.height,
            info.format,
            phash_to_sql(info.phash),
        )
        await con.execute(
            "INSERT INTO image_sources (source_key, sha256) VALUES ($1, $2)"
            " ON CONFLICT (source_key) DO UPDATE"
            " SET sha256 = EXCLUDED.sha256, seen_at = now()",
            source_key,
            sha256,
        )


async def image_phashes(con: Executor, shas: Iterable[str]) -> dict[str, int | None]:
    """``{sha256: perceptual hash or None}`` for stored images (None: stored without one)."""
    rows = await con.fetch(
        "SELECT sha256, phash FROM images WHERE sha256 = ANY($1::text[])", list(shas)
    )
    return {r["sha256"]: phash_from_sql(r["phash"]) for r in rows}


async def image_bytes(con: Executor, shas: Sequence[str]) -> dict[str, bytes]:
    rows = await con.fetch(
        "SELECT sha256, bytes FROM images WHERE sha256 = ANY($1::text[])", list(shas)
    )
    return {r["sha256"]: bytes(r["bytes"]) for r in rows}


async def set_phashes(con: Executor, phashes: Mapping[str, int]) -> None:
    """Record hashes computed later (images stored before hashes were)."""
    await con.executemany(
        "UPDATE images SET phash = $2 WHERE sha256 = $1 AND phash IS NULL",
        [(sha, phash_to_sql(phash)) for sha, phash in phashes.items()],
    )


async def find_dataset(
    con: Executor, *, digest: str, test_fraction: float, val_fraction: float, seed: int
) -> int | None:
    value = await con.fetchval(
        "SELECT id FROM datasets"
        " WHERE digest = $1 AND test_fraction = $2 AND val_fraction = $3 AND seed = $4",
        digest,
        test_fraction,
        val_fraction,
        seed,
    )
    return None if value is None else int(value)


async def create_dataset(pool: Pool, row: DatasetRow, manifest: Sequence[ManifestRow]) -> int:
    """Insert the dataset and its manifest; the same content returns the existing row's id."""
    async with pool.acquire() as con, con.transaction():
        dataset_id = await con.fetchval(
            "INSERT INTO datasets (start_date, end_date, tags, digest, test_fraction,"
            " val_fraction, seed, n_images, counts, split_counts, skipped, rejected, n_groups)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            " ON CONFLICT (digest, test_fraction, val_fraction, seed) DO NOTHING"
            " RETURNING id",
            row.start_date,
            row.end_date,
            list(row.tags),
            row.digest,
            row.test_fraction,
            row.val_fraction,
            row.seed,
            len(manifest),
            dict(row.counts),
            {k: dict(v) for k, v in row.split_counts.items()},
            row.skipped,
            dict(row.rejected),
            row.n_groups,
        )
        if dataset_id is None:  # the same content is already a dataset (a concurrent twin)
            existing = await find_dataset(
                con,
                digest=row.digest,
                test_fraction=row.test_fraction,
                val_fraction=row.val_fraction,
                seed=row.seed,
            )
            assert existing is not None
            return existing
        await con.copy_records_to_table(
            "dataset_images",
            records=[
                (dataset_id, m.sha256, m.tag, m.source_url, m.taken_at, m.split) for m in manifest
            ],
            columns=["dataset_id", "sha256", "tag", "source_url", "taken_at", "split"],
        )
        return int(dataset_id)


async def model_dataset(con: Executor, model_id: int) -> int | None:
    """The dataset a model was trained on, or None when there is no such model."""
    value = await con.fetchval("SELECT dataset_id FROM models WHERE id = $1", model_id)
    return None if value is None else int(value)


async def model_classes(con: Executor, model_id: int) -> tuple[str, ...] | None:
    """The classes a model was trained on; None when there is no such model."""
    names = await con.fetchval("SELECT class_names FROM models WHERE id = $1", model_id)
    return None if names is None else tuple(names)
