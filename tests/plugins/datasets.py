"""Datasets in Postgres without the fetcher: the simulator's photos, inserted directly.

Registered by ``tests/conftest.py``. Any test (trainer, evaluator, CLI) can use:

- :func:`create_dataset` — ``await create_dataset(pool, per_class={"vine": 10, ...})``
  inserts rendered photos into ``images``, a ``datasets`` row and ``dataset_images``
  with a stratified, deterministic train/val/test split; returns the dataset id.
- :func:`create_request` — a ``training_requests`` row for a (training) request.
- fixture ``make_dataset`` — ``await make_dataset(per_class=..., ...)`` bound to ``pool``.

Photos come from ``services.simulator.field.render`` (vine rows, soil, grass blades, with
jitter and noise): visually distinct classes a small ResNet learns at 32 px, i.e.
"the simulator's data" the handbook's held-out accuracy check asks for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import pytest

from services.simulator.field import render

DEFAULT_PER_CLASS: Mapping[str, int] = {"vine": 12, "ground": 12, "grass": 12}


def photo(tag: str, index: int, *, seed: int = 0, width: int = 64, height: int = 48) -> bytes:
    """JPEG bytes of the ``index``-th simulated photo of ``tag`` (deterministic)."""
    day = dt.date(2021, 1, 1) + dt.timedelta(days=index // 50)
    return render(f"{day:%Y%m%d}-{tag}-{index % 50:02d}", tag, seed, width, height)


def split_of(position: int, n: int, fractions: tuple[float, float, float]) -> str:
    """Stratified split of the ``position``-th of ``n`` images of one class."""
    _, val, test = fractions
    n_test = round(n * test)
    n_val = round(n * val)
    if position < n_test:
        return "test"
    if position < n_test + n_val:
        return "val"
    return "train"


async def create_dataset(
    con: asyncpg.Connection | asyncpg.Pool,
    *,
    per_class: Mapping[str, int] = DEFAULT_PER_CLASS,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    width: int = 64,
    height: int = 48,
    tags: tuple[str, ...] | None = None,
    start_date: dt.date = dt.date(2021, 5, 1),
    end_date: dt.date = dt.date(2021, 6, 1),
) -> int:
    """Insert a dataset of simulated photos; return its id.

    ``per_class`` gives the number of images per tag (0 makes an empty class); ``tags``
    (default: the keys of ``per_class``) is the dataset's tag list, i.e. the class names.
    ``fractions`` are (train, val, test), applied per class. Images are shared between
    datasets by their sha256, like the fetcher's content-addressed store.
    """
    tags = tuple(tags or per_class)
    rows: list[tuple[str, bytes, str, str]] = []  # sha256, bytes, tag, split
    for tag in tags:
        n = per_class.get(tag, 0)
        for i in range(n):
            data = photo(tag, i, seed=seed, width=width, height=height)
            rows.append((hashlib.sha256(data).hexdigest(), data, tag, split_of(i, n, fractions)))
    digest = hashlib.sha256(
        "".join(sorted(f"{sha}:{tag};" for sha, _, tag, _ in rows)).encode()
        + uuid.uuid4().bytes  # every call is a new dataset, even for equal content
    ).hexdigest()
    counts = {tag: per_class.get(tag, 0) for tag in tags}
    split_counts: dict[str, dict[str, int]] = {}
    for _, _, tag, split in rows:
        split_counts.setdefault(split, {}).setdefault(tag, 0)
        split_counts[split][tag] += 1

    async def insert(c: asyncpg.Connection) -> int:
        from PIL import Image

        for sha, data, _, _ in rows:
            with Image.open(io.BytesIO(data)) as img:
                w, h, fmt = img.width, img.height, img.format or "JPEG"
            await c.execute(
                "INSERT INTO images (sha256, bytes, byte_size, width, height, format)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
                sha, data, len(data), w, h, fmt,
            )  # fmt: skip
        dataset_id = await c.fetchval(
            "INSERT INTO datasets (start_date, end_date, tags, digest, test_fraction,"
            " val_fraction, seed, n_images, counts, split_counts)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            start_date, end_date, list(tags), digest, fractions[2], fractions[1], seed,
            len(rows), counts, split_counts,
        )  # fmt: skip
        await c.executemany(
            "INSERT INTO dataset_images (dataset_id, sha256, tag, source_url, taken_at, split)"
            " VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT DO NOTHING",
            [
                (dataset_id, sha, tag, f"https://sim.test/media/{sha[:16]}.jpg", split)
                for sha, _, tag, split in rows
            ],
        )
        return int(dataset_id)

    if isinstance(con, asyncpg.Pool):
        async with con.acquire() as c, c.transaction():
            return await insert(c)
    async with con.transaction():
        return await insert(con)


async def create_request(
    con: asyncpg.Connection | asyncpg.Pool,
    params: Mapping[str, Any] | None = None,
    *,
    request_id: uuid.UUID | None = None,
    kind: str = "training",
) -> uuid.UUID:
    """Insert a ``training_requests`` row (as the CLI does); return its id."""
    request_id = request_id or uuid.uuid4()
    await con.execute(
        "INSERT INTO training_requests (id, kind, params) VALUES ($1, $2, $3)",
        request_id,
        kind,
        dict(params or {}),
    )
    return request_id


@pytest.fixture
def make_dataset(pool: asyncpg.Pool) -> Callable[..., Awaitable[int]]:
    """``await make_dataset(per_class={...}, ...)`` → dataset id, in the test's database."""

    async def make(**kwargs: Any) -> int:
        return await create_dataset(pool, **kwargs)

    return make
