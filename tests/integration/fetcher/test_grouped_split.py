"""Honest splits through the fetcher, checked in PostgreSQL: photos that look alike (one
capture session, near duplicates) never span two splits; photos taken outside the requested
range are left out and counted; images stored without perceptual hash get one."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image, ImageEnhance

from services.fetcher.client import ChouetteClient, Download
from services.fetcher.dataset import OUT_OF_RANGE
from services.fetcher.handler import FetcherHandler
from services.simulator import field
from shared import db
from shared.errors import PermanentError
from shared.messages import DatasetSpec, TrainingParams, TrainingRequested
from tests.plugins.fetcher import SleepRecorder, fetcher_settings
from tests.plugins.simulator import SimulatorHandle

pytestmark = pytest.mark.integration

WEEK = DatasetSpec(start_date=dt.date(2021, 6, 1), end_date=dt.date(2021, 6, 7))  # 10/8/3
MONTH = DatasetSpec(start_date=dt.date(2021, 6, 1), end_date=dt.date(2021, 6, 30))
GAP = 1800.0  # half an hour: the simulator's field days then have sessions of several photos
DISTANCE = 6


def training(spec: DatasetSpec, seed: int = 42) -> TrainingRequested:
    params = TrainingParams(architecture="ResNet50", epochs=1, seed=seed)
    return TrainingRequested(request_id=uuid.uuid4(), dataset=spec, training=params)


@pytest.fixture
async def client(simulator: SimulatorHandle) -> AsyncIterator[ChouetteClient]:
    simulator.set_faults(missing_link_rate=0.0)
    async with ChouetteClient.open(
        simulator.settings(), fetcher_settings(), sleep=SleepRecorder()
    ) as c:
        yield c


def handler_for(pool: db.Pool, client: ChouetteClient, **settings: Any) -> FetcherHandler:
    return FetcherHandler(pool, client, fetcher_settings(progress_interval=0.0, **settings))


def brightened(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data))
    out = io.BytesIO()
    ImageEnhance.Brightness(img).enhance(1.1).save(out, format="JPEG", quality=90)
    return out.getvalue()


def serve_near_copies(client: ChouetteClient, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Every third photo of a day downloads as a brightened copy of the day's first photo of
    its class (hours apart: only the hash relates them), as an API with re-uploads would."""
    download = client.download

    async def copying(url: str) -> Download:
        got = await download(url)
        match = re.search(r"/(\d{8})-(\w+)-(\d{2})\.jpg", url)
        assert match is not None
        day, tag, index = match[1], match[2], int(match[3])
        if index % 3 == 2:
            data = brightened(field.render(f"{day}-{tag}-00", tag, seed))
            return Download(data, hashlib.sha256(data).hexdigest())
        return got

    monkeypatch.setattr(client, "download", copying)


# Pairs of one dataset that the grouping relates: taken less than $2 seconds apart, or with
# perceptual hashes at most $3 bits apart (XOR of the signed bigints, bits counted).
RELATED_PAIRS = """
SELECT a.sha256 AS a, b.sha256 AS b, a.split AS a_split, b.split AS b_split,
       abs(extract(epoch FROM a.taken_at - b.taken_at)) < $2 AS same_session,
       length(replace(((ia.phash # ib.phash)::bit(64))::text, '0', '')) <= $3 AS near_duplicate
FROM dataset_images a
JOIN dataset_images b ON b.dataset_id = a.dataset_id AND a.sha256 < b.sha256
JOIN images ia ON ia.sha256 = a.sha256
JOIN images ib ON ib.sha256 = b.sha256
WHERE a.dataset_id = $1
  AND (abs(extract(epoch FROM a.taken_at - b.taken_at)) < $2
       OR length(replace(((ia.phash # ib.phash)::bit(64))::text, '0', '')) <= $3)
"""


def components(shas: list[str], pairs: list[tuple[str, str]]) -> int:
    parent = {s: s for s in shas}

    def find(s: str) -> str:
        while parent[s] != s:
            s = parent[s]
        return s

    for a, b in pairs:
        parent[find(a)] = find(b)
    return len({find(s) for s in shas})


async def test_no_group_of_photos_that_look_alike_spans_two_splits(
    pool: db.Pool,
    client: ChouetteClient,
    simulator: SimulatorHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serve_near_copies(client, monkeypatch, simulator.state.settings.seed)
    handler = handler_for(pool, client, session_gap_seconds=GAP, phash_max_distance=DISTANCE)
    for seed in (42, 7, 2024):
        ready = await handler(training(MONTH, seed))
        row = await pool.fetchrow("SELECT * FROM datasets WHERE id = $1", ready.dataset_id)
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM dataset_images di JOIN images i USING (sha256)"
                " WHERE dataset_id = $1 AND (i.phash IS NULL OR di.taken_at IS NULL)",
                ready.dataset_id,
            )
            == 0
        )
        related = await pool.fetch(RELATED_PAIRS, ready.dataset_id, GAP, DISTANCE)
        # Not vacuous: both relations occur in this month.
        assert sum(r["same_session"] for r in related) >= 10
        assert sum(r["near_duplicate"] and not r["same_session"] for r in related) >= 10
        spanning = [dict(r) for r in related if r["a_split"] != r["b_split"]]
        assert spanning == []
        # The row's group count is the number of connected components of those pairs.
        shas = [
            r["sha256"]
            for r in await pool.fetch(
                "SELECT sha256 FROM dataset_images WHERE dataset_id = $1", ready.dataset_id
            )
        ]
        assert row["n_groups"] == components(shas, [(r["a"], r["b"]) for r in related])
        assert row["n_groups"] < row["n_images"] == len(shas)
        # Each class still has a test side and a training side.
        sides = {
            (r["split"], r["tag"])
            for r in await pool.fetch(
                "SELECT DISTINCT split, tag FROM dataset_images WHERE dataset_id = $1",
                ready.dataset_id,
            )
        }
        for tag in ("vine", "ground", "grass"):
            assert {("train", tag), ("test", tag)} <= sides


async def test_photos_taken_outside_the_range_are_left_out_and_counted(
    pool: db.Pool, client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(out_of_range_rate=0.3)
    handler = handler_for(pool, client)
    ready = await handler(training(WEEK))
    row = await pool.fetchrow("SELECT * FROM datasets WHERE id = $1", ready.dataset_id)
    left_out = row["rejected"][OUT_OF_RANGE]
    assert 0 < left_out < 21
    assert row["n_images"] == 21 - left_out
    assert simulator.stats["downloads"] == 21 - left_out  # not even downloaded
    dates = await pool.fetch(
        "SELECT taken_at FROM dataset_images WHERE dataset_id = $1", ready.dataset_id
    )
    # timestamptz comes back in UTC: the simulator's photos are taken 08:00-18:00 local time.
    assert all(WEEK.start_date <= r["taken_at"].date() <= WEEK.end_date for r in dates)


async def test_a_tag_taken_only_outside_the_range_has_no_usable_images(
    pool: db.Pool, client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(out_of_range_rate=1.0)
    with pytest.raises(
        PermanentError, match=r"no usable images tagged .*taken outside the requested range 21"
    ):
        await handler_for(pool, client)(training(WEEK))
    assert simulator.stats["downloads"] == 0


async def test_images_stored_without_hash_get_it_from_their_bytes(
    pool: db.Pool, client: ChouetteClient
) -> None:
    handler = handler_for(pool, client)
    first = await handler(training(WEEK))
    before = dict(await pool.fetch("SELECT sha256, phash FROM images"))
    assert len(before) == 21 and None not in before.values()
    await pool.execute("UPDATE images SET phash = NULL")  # as stored before the migration
    again = await handler(training(WEEK, seed=7))  # a new dataset over the same images
    assert again.dataset_id != first.dataset_id
    assert dict(await pool.fetch("SELECT sha256, phash FROM images")) == before
    assert await pool.fetchval(
        "SELECT n_groups FROM datasets WHERE id = $1", again.dataset_id
    ) == await pool.fetchval("SELECT n_groups FROM datasets WHERE id = $1", first.dataset_id)
