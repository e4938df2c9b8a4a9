"""What the crash, restart and consumer-timeout fault tests share."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from localstack.servers import PostgresServer
from tests.plugins.pipeline import Pipeline
from tests.plugins.servers import drain_queue

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


POSTGRES_OUTAGE_SECONDS = 60


def start_cli(pipeline: Pipeline, out: Path, err: Path, epochs: int = 4) -> subprocess.Popen[bytes]:
    """`chouette train --wait` on a short range, its output in files."""
    start, end = SHORT
    argv = ["train", "--start-date", start, "--end-date", end, "--arch", "ResNet50"]
    argv += ["--image-size", "32", "--epochs", str(epochs), "--batch-size", "8"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return pipeline.spawn_chouette(
            *argv, "--wait", "--timeout", "900", stdout=stdout, stderr=stderr
        )


async def first_line_id(out: Path, cli: subprocess.Popen[bytes]) -> uuid.UUID:
    """The request id `chouette train` prints at once."""
    for _ in range(120):
        lines = (await asyncio.to_thread(out.read_text)).splitlines()
        if lines:
            return uuid.UUID(lines[0].strip())
        assert cli.poll() is None, "chouette train exited before printing the request id"
        await asyncio.sleep(0.5)
    raise AssertionError("chouette train printed no request id in 60 s")


async def postgres_down_for_a_minute_mid_stage(
    stage: str,
    private_postgres: PostgresServer,
    servers: Any,
    pipeline_on: Any,
    simulator_server: Any,
    tmp_path: Path,
) -> None:
    """PostgreSQL stopped for a minute in the middle of ``stage`` (one test file per stage:
    `make test` runs files in parallel, the outages no longer add up)."""
    env = {"FETCHER_CONCURRENCY": "2"} if stage == "fetching" else {}
    async with pipeline_on(servers.amqp_url, private_postgres.url, **env) as pipeline:
        if stage == "fetching":  # ~25 s of downloads: the outage starts in the middle
            # Here, not before: entering pipeline_on resets the simulator's faults.
            simulator_server.set_faults(latency=0.5)
        pipeline.start_all()
        await asyncio.to_thread(pipeline.wait_ready, 400)
        # Submitted and followed by `chouette train --wait`, which must ride out the outage.
        out, err = tmp_path / "cli.out", tmp_path / "cli.err"
        # Training: enough epochs (a few seconds each at 32 px) that the outage, started
        # after the first, meets the training rather than a request already finished.
        epochs = 12 if stage == "training" else 4
        cli = await asyncio.to_thread(start_cli, pipeline, out, err, epochs)
        request_id = await first_line_id(out, cli)
        if stage == "evaluating":
            # The evaluator's first request traces its inference graph: seconds of work.
            await wait_for_log(pipeline, "evaluator", "handling ModelReady")
        elif stage == "training":
            # After the first epoch (which traces the network): the next commit meets the outage.
            await pipeline.wait_until(f"SELECT ({EPOCHS_OF_REQUEST}) >= 1", request_id, timeout=600)
        else:
            await pipeline.wait_until(
                "SELECT 1 FROM training_requests WHERE id = $1 AND stage = $2"
                " AND status = 'running'",
                request_id,
                stage,
                timeout=600,
            )
            await asyncio.sleep(1)
        await asyncio.to_thread(private_postgres.stop)
        await asyncio.sleep(POSTGRES_OUTAGE_SECONDS)
        await asyncio.to_thread(private_postgres.start)

        row = await pipeline.wait_for(request_id, timeout=600)
        assert row["status"] == "succeeded", (row["stage"], row["error"], pipeline.logs())
        code = await asyncio.to_thread(cli.wait, 120)
        stdout, stderr = await asyncio.to_thread(lambda: (out.read_text(), err.read_text()))
        assert code == 0, (stdout, stderr)
        assert "succeeded" in stdout
        assert "Traceback" not in stderr, stderr
        assert stderr.count("PostgreSQL unreachable") == 1, stderr
        # The outage met a handler, which waited for the database instead of failing.
        logs = "".join(service.text() for service in pipeline.services.values())
        assert "PostgreSQL unreachable; waiting for it" in logs
        assert "requeue in" not in logs  # no delivery attempt was spent
        running = await pipeline.pool.fetchval(
            "SELECT count(*) FROM training_requests WHERE status = 'running'"
        )
        assert running == 0
        for key, service in pipeline.services.items():
            assert service.popen.poll() is None, f"{key} died:\n{service.text()[-3000:]}"


RABBITMQ_OUTAGE_SECONDS = 20
TAKEN_OVER = "delivered again while still handled here"


async def log_count(pipeline: Pipeline, key: str, text: str, count: int, timeout: float) -> None:
    """Wait until ``key``'s log holds ``text`` at least ``count`` times."""
    deadline = time.monotonic() + timeout
    while pipeline.services[key].text().count(text) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{key} logged {text!r} fewer than {count} times:\n{pipeline.logs()}")
        await asyncio.sleep(0.5)


async def rabbitmq_down_mid_stage(
    stage: str,
    outages: int,
    private_rabbit: Any,
    db_url: str,
    pipeline_on: Any,
    simulator_server: Any,
    tmp_path: Path,
) -> None:
    """RabbitMQ stopped ``outages`` times for ~20 s in the middle of ``stage``, restarted on
    the same port and data directory each time: the handler goes on, publishes its result
    once RabbitMQ is back and settles the redelivery, spending no delivery attempt."""
    rabbit = await asyncio.to_thread(private_rabbit)
    key = {"fetching": "fetcher", "training": "trainer", "evaluating": "evaluator"}[stage]
    env = {"FETCHER_CONCURRENCY": "2"} if stage == "fetching" else {}
    async with pipeline_on(rabbit.url, db_url, **env) as pipeline:
        if stage == "fetching":  # downloads outlast the outages (set after pipeline_on)
            simulator_server.set_faults(latency=0.5 if outages == 1 else 1.5)
        pipeline.start_all()
        await asyncio.to_thread(pipeline.wait_ready, 400)
        out, err = tmp_path / "cli.out", tmp_path / "cli.err"
        # Training: enough epochs that the outage meets it (as for PostgreSQL above).
        epochs = 12 if stage == "training" else 4
        cli = await asyncio.to_thread(start_cli, pipeline, out, err, epochs)
        request_id = await first_line_id(out, cli)
        if stage == "training":  # after the first epoch (which traces the network)
            await pipeline.wait_until(f"SELECT ({EPOCHS_OF_REQUEST}) >= 1", request_id, timeout=600)
        elif stage == "evaluating":
            # The evaluator's first request traces its inference graph: seconds of work.
            await wait_for_log(pipeline, "evaluator", "handling ModelReady")
        else:
            await pipeline.wait_until(
                "SELECT 1 FROM training_requests WHERE id = $1 AND stage = $2"
                " AND status = 'running'",
                request_id,
                stage,
                timeout=600,
            )
            await asyncio.sleep(1)
        for n in range(outages):
            await asyncio.to_thread(rabbit.stop)
            await asyncio.sleep(RABBITMQ_OUTAGE_SECONDS)
            await asyncio.to_thread(rabbit.start)
            if n + 1 < outages:  # the next outage meets the same message again
                await log_count(pipeline, key, TAKEN_OVER, n + 1, timeout=120)

        row = await pipeline.wait_for(request_id, timeout=600)
        assert row["status"] == "succeeded", (row["stage"], row["error"], pipeline.logs())
        code = await asyncio.to_thread(cli.wait, 120)
        stdout, stderr = await asyncio.to_thread(lambda: (out.read_text(), err.read_text()))
        assert code == 0, (stdout, stderr)
        assert "succeeded" in stdout
        assert "Traceback" not in stderr, stderr
        if stage == "evaluating":
            # The last stage records its result before publishing it: the request succeeds
            # in PostgreSQL while the handler still waits for RabbitMQ to publish and settle.
            await log_count(pipeline, key, "RabbitMQ is back; published", 1, timeout=300)
        await log_count(pipeline, key, TAKEN_OVER, outages, timeout=120)
        await asyncio.sleep(1)  # a second redelivery, if any, would show now
        logs = pipeline.services[key].text()
        # Each outage met the handler, which went on; its redelivery was settled by the
        # handling in progress, never handled again nor counted as an attempt.
        assert logs.count(TAKEN_OVER) == outages, pipeline.logs()
        assert "requeue in" not in logs, pipeline.logs()
        assert "(delivery 2)" not in logs, pipeline.logs()
        assert "could not settle" not in logs, pipeline.logs()
        running = await pipeline.pool.fetchval(
            "SELECT count(*) FROM training_requests WHERE status = 'running'"
        )
        assert running == 0
        # Events kept flowing: the result reached the events queue after the outages.
        events = await drain_queue(rabbit.url, f"{pipeline.settings.broker_namespace}.events")
        assert any(
            m.correlation_id == str(request_id) and m.type == "ModelEvaluated" for m in events
        ), [(m.type, m.correlation_id) for m in events]
        for name, service in pipeline.services.items():
            assert service.popen.poll() is None, f"{name} died:\n{service.text()[-3000:]}"
