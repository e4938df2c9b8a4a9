"""What the crash, restart and consumer-timeout fault tests share."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.plugins.pipeline import Pipeline

# Two months of simulated field photos: ~100 training images, a few seconds per epoch.
LONG = ("2021-05-01", "2021-06-30")
SHORT = ("2021-05-01", "2021-05-14")
MONTH = ("2021-05-01", "2021-05-31")

EPOCHS_OF_REQUEST = """
    SELECT coalesce(max(e.epoch), 0) FROM training_epochs e
    JOIN models m ON m.id = e.model_id WHERE m.request_id = $1
"""


async def epoch_rows(pipeline: Pipeline, request_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await pipeline.pool.fetch(
        "SELECT e.epoch, e.created_at FROM training_epochs e"
        " JOIN models m ON m.id = e.model_id WHERE m.request_id = $1 ORDER BY e.epoch",
        request_id,
    )
    return [dict(r) for r in rows]


async def wait_for_log(pipeline: Pipeline, key: str, text: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while text not in pipeline.services[key].text():
        if time.monotonic() > deadline:
            pytest.fail(f"{key} never logged {text!r}:\n{pipeline.logs()}")
        await asyncio.sleep(0.5)


async def assert_one_model(pipeline: Pipeline, request_id: uuid.UUID) -> None:
    models = await pipeline.pool.fetchval(
        "SELECT count(*) FROM models WHERE request_id = $1", request_id
    )
    assert models == 1
