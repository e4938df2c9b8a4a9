"""Load: many training requests at once, two competing trainers.

``CHOUETTE_LOAD_REQUESTS`` sets how many: 50 by default. Each request trains, stores and
evaluates its own ResNet50; each trainer traces the network once and then reuses it
(``shared/model_cache.py``), so 50 take ~4-5 minutes on two CPU cores (12.2 requests/min
measured there); before that, tracing every request made 50 far too long for ``make test``.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.plugins.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

REQUESTS = int(os.environ.get("CHOUETTE_LOAD_REQUESTS", "50"))
WEEK = ("2021-06-01", "2021-06-07")


async def test_many_requests_two_trainers_all_complete_once(pipeline: Pipeline) -> None:
    pipeline.start("fetcher")
    pipeline.start("trainer", key="trainer-a")
    pipeline.start("trainer", key="trainer-b")
    pipeline.start("evaluator")
    started = time.monotonic()
    requests = await asyncio.gather(
        *(
            pipeline.submit_training(*WEEK, epochs=1, image_size=32, batch_size=16, seed=i)
            for i in range(REQUESTS)
        )
    )
    for request_id in requests:
        row = await pipeline.wait_for(request_id, timeout=300 + 60 * REQUESTS)
        assert row["status"] == "succeeded", row["error"]
    minutes = (time.monotonic() - started) / 60
    print(f"\n{REQUESTS} requests in {minutes:.1f} min: {REQUESTS / minutes:.1f} requests/min")

    pool = pipeline.pool
    assert await pool.fetchval("SELECT count(*) FROM models") == REQUESTS
    assert await pool.fetchval("SELECT count(DISTINCT request_id) FROM models") == REQUESTS
    assert await pool.fetchval("SELECT count(*) FROM models WHERE status = 'trained'") == REQUESTS
    assert await pool.fetchval("SELECT count(*) FROM evaluations") == REQUESTS
    duplicates = await pool.fetchval(
        "SELECT count(*) FROM (SELECT model_id, epoch FROM training_epochs"
        " GROUP BY 1, 2 HAVING count(*) > 1) d"
    )
    assert duplicates == 0
    # Both trainers did real work (competing consumers, prefetch 1).
    logs = {key: service.text() for key, service in pipeline.services.items()}
    for key in ("trainer-a", "trainer-b"):
        assert "trained" in logs[key], f"{key} trained nothing"
    assert await pool.fetchval("SELECT count(*) FROM failures") == 0
