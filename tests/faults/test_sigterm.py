"""SIGTERM ends every service within its grace period, whatever the servers are doing.

RabbitMQ unreachable, PostgreSQL stopped, a handler stuck: the service exits 0 in time
and leaves what it had not settled to be redelivered. Each test runs the real services as
subprocesses against a private server it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from localstack.servers import PostgresServer, RabbitServer
from tests.faults.common import SHORT
from tests.plugins.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

# The fetcher and evaluator get 10 s to finish a message, the trainer
# TRAINER_STOP_GRACE_SECONDS (2 in tests); then the service has a few seconds to close.
GRACE = {"fetcher": 10.0, "trainer": 2.0, "evaluator": 10.0}
MARGIN = 7.0  # shared.shutdown.CLOSE_SECONDS and the time to notice the exit


async def sigterm_all_and_wait(pipeline: Pipeline) -> None:
    """SIGTERM every service at once; each must exit 0 within its grace and the margin."""
    started = time.monotonic()
    for key in pipeline.services:
        pipeline.signal(key, signal.SIGTERM)
    late: list[str] = []
    for key, service in pipeline.services.items():
        limit = GRACE[service.service] + MARGIN
        try:
            code = await asyncio.to_thread(
                service.popen.wait, max(0.1, started + limit - time.monotonic())
            )
        except subprocess.TimeoutExpired:
            late.append(f"{key} running {limit:.0f}s after SIGTERM:\n{service.text()[-3000:]}")
            continue
        assert code == 0, f"{key} exited {code}:\n{service.text()[-3000:]}"
    assert not late, "\n".join(late)


async def test_sigterm_with_rabbitmq_stopped(
    private_rabbit: Any, db_url: str, pipeline_on: Any
) -> None:
    rabbit: RabbitServer = await asyncio.to_thread(private_rabbit)
    async with pipeline_on(rabbit.url, db_url) as pipeline:
        pipeline.start_all()
        await asyncio.to_thread(pipeline.wait_ready, 400)
        await asyncio.to_thread(rabbit.stop)
        await asyncio.sleep(3)  # the services notice and start reconnecting
        try:
            await sigterm_all_and_wait(pipeline)
        finally:
            await asyncio.to_thread(rabbit.start)  # for the fixtures' own clean-up


async def test_sigterm_with_postgres_stopped_mid_request(
    private_postgres: PostgresServer, servers: Any, pipeline_on: Any
) -> None:
    async with pipeline_on(servers.amqp_url, private_postgres.url) as pipeline:
        pipeline.start_all()
        await asyncio.to_thread(pipeline.wait_ready, 400)
        request_id = await pipeline.submit_training(*SHORT, epochs=3)
        await pipeline.wait_until(
            "SELECT 1 FROM training_requests WHERE id = $1 AND stage = 'training'",
            request_id,
            timeout=300,
        )
        await asyncio.to_thread(private_postgres.stop)
        await asyncio.sleep(3)
        try:
            await sigterm_all_and_wait(pipeline)
        finally:
            await asyncio.to_thread(private_postgres.start)
        # Nothing was settled while the database was away: the training request is
        # redelivered to the next trainer, which completes it.
        pipeline.start_all()
        row = await pipeline.wait_for(request_id, timeout=600)
        assert row["status"] == "succeeded", (row["error"], pipeline.logs())


def postgres_processes(server: PostgresServer) -> list[int]:
    """The postmaster and its children (the backends that hold the services' connections)."""
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


async def test_sigterm_with_postgres_frozen(
    private_postgres: PostgresServer, servers: Any, pipeline_on: Any
) -> None:
    """PostgreSQL stopped with SIGSTOP: connections stay open and nothing answers (a hung
    server, a network partition). Closing the pool used to wait for it forever."""
    async with pipeline_on(servers.amqp_url, private_postgres.url) as pipeline:
        pipeline.start("fetcher")
        pipeline.start("evaluator")
        await asyncio.to_thread(pipeline.wait_ready, 400)
        frozen = postgres_processes(private_postgres)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            await sigterm_all_and_wait(pipeline)
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


async def test_sigterm_with_a_handler_stuck(pipeline: Pipeline, simulator_server: Any) -> None:
    """The fetcher waits on an API that does not answer; SIGTERM ends it in time, and the
    request it was working on is redelivered to the next fetcher."""
    simulator_server.set_faults(hang_first=1, fail_on="listing", hang_seconds=600)
    pipeline.start("fetcher", FETCHER_REQUEST_TIMEOUT="600")
    await asyncio.to_thread(pipeline.wait_ready, 400)
    request_id = await pipeline.submit_training(*SHORT)
    await pipeline.wait_until(
        "SELECT 1 FROM training_requests WHERE id = $1 AND stage = 'fetching'", request_id
    )
    await asyncio.sleep(2)  # inside the hanging listing request
    await sigterm_all_and_wait(pipeline)
    pipeline.start("fetcher", key="fetcher2")
    await pipeline.wait_until(
        "SELECT 1 FROM training_requests WHERE id = $1 AND dataset_id IS NOT NULL",
        request_id,
        timeout=300,
    )
    assert isinstance(request_id, uuid.UUID)
