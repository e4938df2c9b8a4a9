"""The fetcher against the simulator and a real PostgreSQL (and RabbitMQ for the last tests)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from services.fetcher.client import ChouetteClient
from services.fetcher.dataset import content_digest, grouping_rule
from services.fetcher.handler import FetcherHandler
from shared import db
from shared.broker import FETCHER, TRAINER, Broker
from shared.errors import CredentialsRejected, PermanentError
from shared.messages import (
    DatasetSpec,
    EvaluationDatasetReady,
    EvaluationRequested,
    TrainingDatasetReady,
    TrainingParams,
    TrainingRequested,
    parse_message,
)
from shared.runtime import make_failure_sink
from tests.plugins import rows
from tests.plugins.fetcher import SleepRecorder, fetcher_settings
from tests.plugins.simulator import SimulatorHandle

pytestmark = pytest.mark.integration

WEEK = DatasetSpec(start_date=dt.date(2021, 6, 1), end_date=dt.date(2021, 6, 7))  # 10/8/3
PARAMS = TrainingParams(architecture="ResNet50", epochs=1)


def training(spec: DatasetSpec = WEEK, **params: object) -> TrainingRequested:
    return TrainingRequested(
        request_id=uuid.uuid4(), dataset=spec, training=PARAMS.model_copy(update=params)
    )


@pytest.fixture
async def client(simulator: SimulatorHandle) -> AsyncIterator[ChouetteClient]:
    async with ChouetteClient.open(
        simulator.settings(), fetcher_settings(), sleep=SleepRecorder()
    ) as c:
        yield c


@pytest.fixture
def handler(pool: db.Pool, client: ChouetteClient, simulator: SimulatorHandle) -> FetcherHandler:
    # No entries without link unless a test asks for them: exact counts below.
    simulator.set_faults(missing_link_rate=0.0)
    return FetcherHandler(pool, client, fetcher_settings(progress_interval=0.0))


async def test_training_request_stores_a_split_dataset(
    handler: FetcherHandler, pool: db.Pool, simulator: SimulatorHandle
) -> None:
    msg = training()
    ready = await handler(msg)
    assert isinstance(ready, TrainingDatasetReady)
    assert (ready.training, ready.request_id) == (PARAMS, msg.request_id)

    row = await pool.fetchrow("SELECT * FROM datasets WHERE id = $1", ready.dataset_id)
    assert row["counts"] == {"vine": 10, "ground": 8, "grass": 3}
    assert row["n_images"] == 21
    assert (row["start_date"], row["end_date"]) == (WEEK.start_date, WEEK.end_date)
    assert row["tags"] == ["vine", "ground", "grass"]
    assert (row["test_fraction"], row["val_fraction"], row["seed"]) == (0.2, 0.15, 42)

    manifest = await pool.fetch(
        "SELECT di.*, i.width, i.height, i.format, i.byte_size, i.bytes, i.phash"
        " FROM dataset_images di"
        " JOIN images i USING (sha256) WHERE dataset_id = $1",
        ready.dataset_id,
    )
    assert len(manifest) == 21
    for m in manifest:
        assert hashlib.sha256(m["bytes"]).hexdigest() == m["sha256"]
        assert (m["width"], m["height"], m["format"]) == (128, 96, "JPEG")
        assert "?" not in m["source_url"]
        assert m["taken_at"] is not None
    grouping = grouping_rule(handler.settings)
    assert row["digest"] == content_digest(((m["sha256"], m["tag"]) for m in manifest), grouping)
    assert 1 <= row["n_groups"] <= 21
    assert all(m["phash"] is not None for m in manifest)
    # Every class has a test image, and the split counts match the manifest.
    per_split = {(m["split"], m["tag"]) for m in manifest}
    assert {("test", t) for t in ("vine", "ground", "grass")} <= per_split
    assert sum(sum(v.values()) for v in row["split_counts"].values()) == 21

    request = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", msg.request_id)
    assert request["kind"] == "training"
    assert (request["status"], request["stage"]) == ("running", "fetching")
    assert request["progress"] == "fetching 21/21"
    assert (request["progress_done"], request["progress_total"]) == (21, 21)
    assert request["dataset_id"] == ready.dataset_id
    assert request["params"]["training"]["architecture"] == "ResNet50"
    assert simulator.stats["downloads"] == 21


async def test_same_request_twice_is_one_dataset_and_no_second_download(
    handler: FetcherHandler, pool: db.Pool, simulator: SimulatorHandle
) -> None:
    msg = training()
    first = await handler(msg)
    downloads = simulator.stats["downloads"]
    again = await handler(msg)  # a redelivery
    other = await handler(training())  # another request for the same content
    # The same message id too: a consumer can spot the duplicate.
    assert first.model_dump(exclude={"created_at"}) == again.model_dump(exclude={"created_at"})
    assert other.dataset_id == first.dataset_id
    assert simulator.stats["downloads"] == downloads
    assert await pool.fetchval("SELECT count(*) FROM datasets") == 1
    assert await pool.fetchval("SELECT count(*) FROM images") == 21


async def test_other_split_params_are_another_dataset_over_the_same_images(
    handler: FetcherHandler, pool: db.Pool, simulator: SimulatorHandle
) -> None:
    a = await handler(training())
    b = await handler(training(seed=7))
    assert a.dataset_id != b.dataset_id
    assert simulator.stats["downloads"] == 21
    assert await pool.fetchval("SELECT count(*) FROM images") == 21


async def test_overlapping_range_downloads_only_the_new_images(
    handler: FetcherHandler, pool: db.Pool, simulator: SimulatorHandle
) -> None:
    await handler(training())
    assert simulator.stats["downloads"] == 21
    two_weeks = DatasetSpec(start_date=dt.date(2021, 6, 1), end_date=dt.date(2021, 6, 14))
    ready = await handler(training(two_weeks))
    n = await pool.fetchval("SELECT n_images FROM datasets WHERE id = $1", ready.dataset_id)
    assert n == 36
    assert simulator.stats["downloads"] == 36


async def test_rejected_and_skipped_images_are_counted(
    handler: FetcherHandler, pool: db.Pool, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(corrupt_rate=0.3, missing_link_rate=0.1)
    month = DatasetSpec(start_date=dt.date(2021, 6, 1), end_date=dt.date(2021, 6, 30))
    ready = await handler(training(month))
    row = await pool.fetchrow("SELECT * FROM datasets WHERE id = $1", ready.dataset_id)
    assert row["rejected"].get("truncated", 0) > 0
    assert row["skipped"] > 0
    listed = await pool.fetchval(
        "SELECT count(*) FROM dataset_images WHERE dataset_id = $1", ready.dataset_id
    )
    assert listed == row["n_images"]


async def test_empty_tag_fails_naming_tag_and_range(
    handler: FetcherHandler, simulator: SimulatorHandle
) -> None:
    winter = DatasetSpec(start_date=dt.date(2021, 1, 1), end_date=dt.date(2021, 2, 28))
    with pytest.raises(
        PermanentError, match=r"no images tagged 'vine' from 2021-01-01 to 2021-02-28"
    ):
        await handler(training(winter))
    assert simulator.stats["downloads"] == 0


async def test_more_images_than_the_cap_fails_naming_the_setting_before_downloading(
    pool: db.Pool, client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(missing_link_rate=0.0)
    capped = FetcherHandler(pool, client, fetcher_settings(max_dataset_images=20))
    with pytest.raises(
        PermanentError, match=r"21 images listed .*FETCHER_MAX_DATASET_IMAGES \(20\)"
    ):
        await capped(training())
    assert simulator.stats["downloads"] == 0


async def test_all_images_rejected_fails_with_the_reasons(
    handler: FetcherHandler, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(non_image_rate=1.0)
    with pytest.raises(PermanentError, match=r"no usable images tagged .*not an image 21"):
        await handler(training())


async def test_credentials_rejected_propagates(
    handler: FetcherHandler, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(unauthorized=True)
    with pytest.raises(CredentialsRejected):
        await handler(training())


async def _insert_model(pool: db.Pool, dataset_id: int, classes: list[str] | None = None) -> int:
    rid = uuid.uuid4()
    await db.ensure_request(pool, rid, "training", {"note": "test"})
    return int(
        await pool.fetchval(
            "INSERT INTO models (request_id, dataset_id, architecture, hyperparams, class_names,"
            " input_shape, status) VALUES ($1, $2, 'ResNet50', '{}', $3, $4, 'trained')"
            " RETURNING id",
            rid,
            dataset_id,
            classes or ["vine", "ground", "grass"],
            [64, 64, 3],
        )
    )


async def test_evaluation_on_the_models_test_split_downloads_nothing(
    handler: FetcherHandler, pool: db.Pool, simulator: SimulatorHandle
) -> None:
    trained = await handler(training())
    model_id = await _insert_model(pool, trained.dataset_id)
    downloads, listings = simulator.stats["downloads"], simulator.stats["listing"]
    msg = EvaluationRequested(request_id=uuid.uuid4(), model_id=model_id)
    ready = await handler(msg)
    assert isinstance(ready, EvaluationDatasetReady)
    assert (ready.model_id, ready.split) == (model_id, "test")
    assert ready.dataset_id == trained.dataset_id
    assert (simulator.stats["downloads"], simulator.stats["listing"]) == (downloads, listings)
    request = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", msg.request_id)
    assert (request["kind"], request["dataset_id"]) == ("evaluation", trained.dataset_id)


async def test_evaluation_on_another_range(
    handler: FetcherHandler, pool: db.Pool, simulator: SimulatorHandle
) -> None:
    trained = await handler(training())
    model_id = await _insert_model(pool, trained.dataset_id)
    later = DatasetSpec(start_date=dt.date(2022, 6, 1), end_date=dt.date(2022, 6, 14))
    ready = await handler(
        EvaluationRequested(request_id=uuid.uuid4(), model_id=model_id, dataset=later)
    )
    assert isinstance(ready, EvaluationDatasetReady)
    assert ready.split == "all"
    assert ready.dataset_id != trained.dataset_id


async def test_evaluation_with_tags_the_model_does_not_know_fails_before_fetching(
    handler: FetcherHandler, pool: db.Pool, simulator: SimulatorHandle
) -> None:
    trained = await handler(training(DatasetSpec(**{**dict(WEEK), "tags": ("vine", "grass")})))
    model_id = await _insert_model(pool, trained.dataset_id, ["vine", "grass"])
    listings = simulator.stats["listing"]
    msg = EvaluationRequested(request_id=uuid.uuid4(), model_id=model_id, dataset=WEEK)
    with pytest.raises(PermanentError, match=r"trained on vine,grass only; it cannot score ground"):
        await handler(msg)
    assert simulator.stats["listing"] == listings


async def test_evaluation_of_an_unknown_model(handler: FetcherHandler) -> None:
    with pytest.raises(PermanentError, match="model 999 does not exist"):
        await handler(EvaluationRequested(request_id=uuid.uuid4(), model_id=999))
    with pytest.raises(PermanentError, match="model 999 does not exist"):
        await handler(EvaluationRequested(request_id=uuid.uuid4(), model_id=999, dataset=WEEK))


async def test_progress_is_written_as_downloads_complete(
    pool: db.Pool, simulator: SimulatorHandle
) -> None:
    settings = fetcher_settings(concurrency=2, progress_interval=0.0)
    simulator.set_faults(latency=0.02, missing_link_rate=0.0)
    async with ChouetteClient.open(simulator.settings(), settings) as client:
        await _watch_progress(pool, FetcherHandler(pool, client, settings))


async def _watch_progress(pool: db.Pool, handler: FetcherHandler) -> None:
    msg = training()
    seen: list[str] = []

    async def watch() -> None:
        while True:
            progress = await pool.fetchval(
                "SELECT progress FROM training_requests WHERE id = $1", msg.request_id
            )
            if progress and (not seen or seen[-1] != progress):
                seen.append(progress)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        await handler(msg)
        await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
    fetching = [p for p in seen if p.startswith("fetching ") and "/" in p]
    assert len(fetching) >= 3, seen
    assert fetching[-1] == "fetching 21/21"


# -- through RabbitMQ ---------------------------------------------------------------------------


async def _consume_one(broker: Broker, queue: str, timeout: float = 20) -> aio_pika.IncomingMessage:
    assert broker.connection is not None
    channel = await broker.connection.channel()
    amqp_queue = await channel.get_queue(broker.queue_name(queue))
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        message = await amqp_queue.get(fail=False)
        if message is not None:
            await message.ack()
            return message  # type: ignore[return-value]
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing arrived on {queue} within {timeout}s")


async def test_through_the_broker(
    broker: Broker, pool: db.Pool, handler: FetcherHandler, simulator: SimulatorHandle
) -> None:
    await broker.consume(
        FETCHER,
        (TrainingRequested, EvaluationRequested),
        handler,
        on_failure=make_failure_sink(pool),
        prefetch=4,
    )
    ok, winter = (
        training(),
        training(DatasetSpec(start_date=dt.date(2021, 1, 1), end_date=dt.date(2021, 2, 28))),
    )
    await broker.publish(ok)
    await broker.publish(winter)
    ready = parse_message((await _consume_one(broker, TRAINER)).body)
    assert isinstance(ready, TrainingDatasetReady)
    assert ready.request_id == ok.request_id
    for _ in range(200):
        status = await rows.request_status(pool, winter.request_id)
        if status == "failed":
            break
        await asyncio.sleep(0.05)
    row = await pool.fetchrow("SELECT * FROM training_requests WHERE id = $1", winter.request_id)
    assert row["status"] == "failed"
    assert "no images tagged 'vine' from 2021-01-01 to 2021-02-28" in row["error"]
    await broker.stop_consuming(grace=2)
