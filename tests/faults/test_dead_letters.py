"""What RabbitMQ dead-letters on its own ends the request ``failed``, with the reason.

A handler that kills its process on every delivery never settles its message; at the
delivery limit RabbitMQ moves it to ``<queue>.dead``. The service's dead-letter consumer
turns it into a failure row, the request ``failed`` and a ``RequestFailed`` event.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from localstack.processes import ROOT
from shared import db
from shared.messages import TrainingDatasetReady, TrainingParams
from tests.plugins import rows
from tests.plugins.pipeline import Pipeline
from tests.plugins.servers import drain_queue

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def start_crash_loop(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.faults.crash_loop"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_handler_that_kills_its_process_ends_the_request_failed(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    request_id = uuid.uuid4()
    await db.ensure_request(pipeline.pool, request_id, "training", {})
    await db.set_stage(pipeline.pool, request_id, "training")
    await pipeline.broker.publish(
        TrainingDatasetReady(
            request_id=request_id,
            dataset_id=1,
            training=TrainingParams(architecture="ResNet50", epochs=1, image_size=32),
        )
    )
    env = pipeline.env
    killed = 0
    status = None
    log = tmp_path / "crash_loop.log"
    # A supervisor (docker's restart policy, systemd) starts the service again each time.
    for _ in range(pipeline.settings.broker_delivery_limit + 5):
        process = start_crash_loop(env, log)
        try:
            for _ in range(120):
                status = await rows.request_status(pipeline.pool, request_id)
                if process.poll() is not None or status == "failed":
                    break
                await asyncio.sleep(0.5)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, 30)
        if code == -signal.SIGKILL:
            killed += 1
        if status == "failed":
            break
    text = log.read_text()
    assert status == "failed", text[-4000:]
    assert killed >= pipeline.settings.broker_delivery_limit, text[-4000:]

    row = await pipeline.pool.fetchrow(
        "SELECT status, stage, error FROM training_requests WHERE id = $1", request_id
    )
    assert row["stage"] == "training"
    assert "dead-lettered by RabbitMQ" in row["error"], row["error"]
    assert "delivery_limit" in row["error"], row["error"]
    failures = await pipeline.pool.fetchval(
        "SELECT count(*) FROM failures WHERE request_id = $1", request_id
    )
    assert failures == 1
    namespace = pipeline.settings.broker_namespace
    events = await drain_queue(pipeline.settings.amqp_url.get_secret_value(), f"{namespace}.events")
    assert any(e.type == "RequestFailed" and e.correlation_id == str(request_id) for e in events), [
        e.type for e in events
    ]

    # `chouette status ID` says why.
    cli = await asyncio.to_thread(pipeline.chouette, "status", str(request_id), timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "failed" in cli.stdout
    assert "dead-lettered by RabbitMQ" in cli.stdout, cli.stdout
