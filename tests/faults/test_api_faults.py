"""Chouette API faults, end to end through the real services."""

from __future__ import annotations

import pytest

from tests.plugins.pipeline import Pipeline
from tests.plugins.simulator import TEST_PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

TRAIN = ("2021-05-01", "2021-05-14")


async def test_rejected_credentials_fail_the_request_clearly(
    pipeline: Pipeline, simulator_server: object
) -> None:
    simulator_server.set_faults(unauthorized=True)  # type: ignore[attr-defined]
    pipeline.start("fetcher", LOG_LEVEL="DEBUG")
    request_id = await pipeline.submit_training(*TRAIN)
    row = await pipeline.wait_for(request_id, timeout=300)
    assert row["status"] == "failed"
    assert row["stage"] == "fetching"
    assert "credentials rejected" in row["error"]
    # Exactly one attempt: no retry loop on 401, and the message went to the dead-letter queue.
    failures = await pipeline.pool.fetchval(
        "SELECT count(*) FROM failures WHERE request_id = $1", request_id
    )
    assert failures == 1
    pipeline.stop_all()
    logs = pipeline.logs()
    assert "credentials rejected" in logs
    assert TEST_PASSWORD not in logs  # not even at DEBUG level


async def test_flaky_listing_and_corrupt_images_still_complete(
    pipeline: Pipeline, simulator_server: object
) -> None:
    """Listing fails three times then succeeds; 10 % of the images are corrupt."""
    simulator_server.set_faults(  # type: ignore[attr-defined]
        fail_first=3, fail_on="listing", fail_status=503, corrupt_rate=0.1
    )
    pipeline.start_all(FETCHER_BACKOFF_BASE="0.05", FETCHER_BACKOFF_MAX="0.2")
    request_id = await pipeline.submit_training(*TRAIN)
    row = await pipeline.wait_for(request_id, timeout=900)
    assert row["status"] == "succeeded", f"{dict(row)}\n{pipeline.logs()}"
    assert simulator_server.stats["status_503"] == 3  # type: ignore[attr-defined]

    dataset = await pipeline.pool.fetchrow(
        "SELECT n_images, rejected FROM datasets WHERE id = $1", row["dataset_id"]
    )
    rejected = sum(dataset["rejected"].values())
    assert rejected >= 1, dataset
    listed = dataset["n_images"] + rejected
    assert 0.02 <= rejected / listed <= 0.3, dataset
    # Only valid images made it into the dataset.
    bad = await pipeline.pool.fetchval(
        "SELECT count(*) FROM dataset_images di JOIN images i USING (sha256)"
        " WHERE di.dataset_id = $1 AND (i.width = 0 OR i.height = 0)",
        row["dataset_id"],
    )
    assert bad == 0
    evaluation = await pipeline.pool.fetchval(
        "SELECT count(*) FROM evaluations WHERE model_id = $1", row["model_id"]
    )
    assert evaluation == 1
