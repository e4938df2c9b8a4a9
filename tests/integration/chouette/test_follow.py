"""--wait and watch are driven by Postgres NOTIFY: simulate the services by writing rows."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import pytest

from chouette.follow import RECHECK_S, watch
from shared import db
from shared.request_state import Progress, Stage
from shared.settings import Settings
from tests.integration.chouette import seed
from tests.integration.chouette.helpers import chouette, drain

pytestmark = pytest.mark.integration

TRAIN = [
    "train",
    "--start-date",
    "2024-05-01",
    "--end-date",
    "2024-05-31",
    "--arch",
    "ResNet50",
    "--epochs",
    "2",
    "--image-size",
    "32",
    "--min-images-per-epoch",
    "0",
]


async def _published_request(pool: db.Pool) -> uuid.UUID:
    for _ in range(200):
        request_id = await pool.fetchval("SELECT id FROM training_requests LIMIT 1")
        if request_id is not None:
            return request_id  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError("the CLI never recorded its request")


async def _play_pipeline(pool: db.Pool, request_id: uuid.UUID) -> None:
    """What fetcher, trainer and evaluator write, in order, with pauses between steps."""
    pause = 0.05
    await db.set_stage(pool, request_id, Stage.FETCHING, Progress("fetching", 0, 30))
    await asyncio.sleep(pause)
    await db.set_progress(pool, request_id, Progress("fetching", 30, 30))
    dataset_id = await seed.dataset(pool)
    model_id = await seed.model(pool, request_id, dataset_id)
    await db.set_stage(
        pool, request_id, Stage.TRAINING, "epoch 0/2", dataset_id=dataset_id, model_id=model_id
    )
    for n in (1, 2):
        await asyncio.sleep(pause)
        await seed.epoch(pool, model_id, n, loss=1.0 / n)
    await db.set_stage(pool, request_id, Stage.EVALUATING, Progress("scoring", 6, 6))
    await asyncio.sleep(pause)
    evaluation_id = await seed.evaluation(pool, model_id, dataset_id, 0.66, request_id)
    await db.set_stage(pool, request_id, "done", status="succeeded", evaluation_id=evaluation_id)


async def test_wait_follows_the_request_to_its_evaluation(
    settings: Settings, broker: object, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = asyncio.create_task(chouette(settings, *TRAIN, "--wait", "--json", "--timeout", "60"))
    request_id = await _published_request(pool)
    await _play_pipeline(pool, request_id)
    # The CLI re-reads the row on its own only every RECHECK_S (30 s): ending within a few
    # seconds of the last write means the notification drove it.
    assert RECHECK_S >= 30
    assert await asyncio.wait_for(cli, 5) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["request_id"] == str(request_id)
    assert out["status"] == "succeeded"
    assert out["model_id"] is not None and out["dataset_id"] is not None
    assert out["error"] is None
    assert out["evaluation"]["macro_f1"] == pytest.approx(0.66)
    assert out["evaluation"]["n_images"] == 6
    assert len(await drain(settings, "fetcher")) == 1


async def test_wait_shows_a_bar_per_stage(
    settings: Settings, broker: object, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = asyncio.create_task(chouette(settings, *TRAIN, "--wait", "--timeout", "60"))
    request_id = await _published_request(pool)
    await _play_pipeline(pool, request_id)
    assert await asyncio.wait_for(cli, 30) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == str(request_id)
    assert "macro F1 0.660" in out
    assert "fetching" in err and "30/30" in err
    assert "epoch [" in err and "2/2" in err and "loss 0.500" in err
    assert "evaluating" in err and "6/6" in err
    assert err.rstrip().endswith("succeeded")


async def test_wait_exits_1_with_the_error_when_the_request_fails(
    settings: Settings, broker: object, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = asyncio.create_task(chouette(settings, *TRAIN, "--wait", "--json", "--timeout", "60"))
    request_id = await _published_request(pool)
    await db.set_stage(pool, request_id, "fetching", "fetching 0/0")
    await db.record_failure(
        pool, request_id=request_id, queue="fetcher", stage="fetching", error="no images found"
    )
    assert await asyncio.wait_for(cli, 30) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "failed"
    assert json.loads(out)["error"] == "no images found"
    assert "failed at fetching: no images found" in err


async def test_wait_gives_up_after_its_timeout(
    settings: Settings, broker: object, pool: db.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await chouette(settings, *TRAIN, "--wait", "--timeout", "0.5") == 1
    assert "gave up waiting" in capsys.readouterr().err


async def test_watch_prints_one_line_per_event(pool: db.Pool) -> None:
    out = io.StringIO()
    stop = asyncio.Event()
    async with pool.acquire() as con:
        watcher = asyncio.create_task(watch(con, out, stop=stop))
        await asyncio.sleep(0.3)  # LISTEN is in place once the header is written
        assert "watching" in out.getvalue()
        request_id = await seed.request(pool)
        await _play_pipeline(pool, request_id)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(watcher, 5)
    lines = out.getvalue().split("watching (Ctrl-C to stop)\n")[1].splitlines()
    text = "\n".join(lines)
    assert f"request    {str(request_id)[:8]}  queued" in text
    assert "fetching 30/30" in text
    assert "epoch      model" in text and " 2/3 " in text  # seed models say 3 epochs
    assert "macro_f1 0.660" in text
    assert "succeeded" in lines[-1]


async def test_watch_prints_a_request_line_only_when_it_says_something_new(
    pool: db.Pool,
) -> None:
    out = io.StringIO()
    stop = asyncio.Event()
    async with pool.acquire() as con:
        watcher = asyncio.create_task(watch(con, out, stop=stop))
        await asyncio.sleep(0.3)
        request_id = await seed.request(pool)
        for done in (3, 3, 9):
            progress = Progress("fetching", done, 9)
            await db.set_stage(pool, request_id, Stage.FETCHING, progress)  # notifies each time
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(watcher, 5)
    text = out.getvalue().split("watching (Ctrl-C to stop)\n")[1]
    assert text.count("fetching 3/9") == 1
    assert text.count("fetching 9/9") == 1
