"""Signals and crashes of the services: nothing is lost, nothing is duplicated.

Each test runs the real services as subprocesses against real RabbitMQ and PostgreSQL.
The restart tests are in ``test_restarts.py``, the consumer timeout in
``test_consumer_timeout.py`` (separate files: pytest-xdist spreads files over workers).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import pytest

from tests.faults.common import (
    EPOCHS_OF_REQUEST,
    MONTH,
    assert_one_model,
    epoch_rows,
    wait_for_log,
)
from tests.plugins.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


async def test_sigterm_then_kill_9_during_training_resume_from_checkpoints(
    pipeline: Pipeline,
) -> None:
    """SIGTERM mid-epoch: exit 0 within 10 s, message redelivered, training resumes.
    Then kill -9 of the next trainer mid-epoch: the third trainer resumes again.
    The request completes with one model and exactly one row per epoch."""
    pipeline.start("fetcher")
    pipeline.start("evaluator")
    pipeline.start("trainer", key="trainer1")
    request_id = await pipeline.submit_training(
        *MONTH, epochs=5, image_size=32, batch_size=8, early_stopping_patience=10
    )

    await pipeline.wait_until(f"SELECT ({EPOCHS_OF_REQUEST}) >= 1", request_id, timeout=600)
    await asyncio.sleep(1.0)  # inside epoch 2
    pipeline.signal("trainer1", signal.SIGTERM)
    started = time.monotonic()
    assert pipeline.wait_exit("trainer1", timeout=10) == 0
    assert time.monotonic() - started < 10
    # An epoch whose commit was under way when the signal came may have landed: what is
    # committed now is what no later trainer may redo.
    first_epochs = await epoch_rows(pipeline, request_id)

    pipeline.start("trainer", key="trainer2")
    await wait_for_log(pipeline, "trainer2", "resuming after epoch")
    committed = len(first_epochs)
    done_before_kill = await pipeline.wait_until(
        f"SELECT CASE WHEN ({EPOCHS_OF_REQUEST}) > $2 THEN ({EPOCHS_OF_REQUEST}) END",
        request_id,
        committed,
        timeout=600,
    )
    await asyncio.sleep(1.0)  # inside the next epoch
    pipeline.signal("trainer2", signal.SIGKILL)
    pipeline.wait_exit("trainer2", timeout=10)
    before_kill = await epoch_rows(pipeline, request_id)

    pipeline.start("trainer", key="trainer3")
    row = await pipeline.wait_for(request_id, timeout=900)
    assert row["status"] == "succeeded", row["error"]
    await assert_one_model(pipeline, request_id)

    epochs = await epoch_rows(pipeline, request_id)
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5]
    # Epochs finished before each interruption were kept, not trained again.
    assert epochs[: len(first_epochs)] == first_epochs
    assert epochs[: len(before_kill)] == before_kill
    assert done_before_kill > committed
    logs = {k: s.text() for k, s in pipeline.services.items()}
    assert "resuming after epoch" in logs["trainer2"]
    assert "resuming after epoch" in logs["trainer3"]
    evaluations = await pipeline.pool.fetchval(
        "SELECT count(*) FROM evaluations WHERE model_id = $1", row["model_id"]
    )
    assert evaluations == 1


@pytest.mark.parametrize("when", ["starting", "idle"])
def test_services_exit_zero_on_sigterm(pipeline: Pipeline, when: str) -> None:
    """SIGTERM while starting (importing TensorFlow, connecting) or idle: exit 0, promptly."""
    for name in ("fetcher", "trainer", "evaluator"):
        pipeline.start(name)
    if when == "starting":
        time.sleep(1.0)
    else:
        pipeline.wait_ready(400)
    for key in list(pipeline.services):
        pipeline.signal(key, signal.SIGTERM)
    for key in list(pipeline.services):
        try:
            assert pipeline.wait_exit(key, timeout=10) == 0, pipeline.services[key].text()
        except subprocess.TimeoutExpired:
            pytest.fail(f"{key} ignored SIGTERM ({when}):\n{pipeline.services[key].text()}")
