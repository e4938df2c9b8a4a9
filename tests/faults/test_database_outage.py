"""PostgreSQL away for a minute in the middle of a stage: the request still succeeds.

An unreachable database is not a failure of the message. Before, the fetcher's retries
(0.5, 1, 2 s…) spent all deliveries in seconds, "could not record the failure;
requeueing", RabbitMQ dead-lettered the message and the request stayed ``running`` for
good, and `chouette train --wait` died with asyncpg tracebacks (exit 1) while the request
went on. Now the service waits for the database and handles the same delivery again, and
`--wait` says so in one line and keeps following.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.cli.stack import ROOT
from shared.local_services import PostgresServer
from tests.faults.common import EPOCHS_OF_REQUEST, SHORT, wait_for_log

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

OUTAGE_SECONDS = 60


def start_cli(env: dict[str, str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    start, end = SHORT
    argv = ["train", "--start-date", start, "--end-date", end, "--arch", "ResNet50"]
    argv += ["--image-size", "32", "--epochs", "4", "--batch-size", "8"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *argv, "--wait", "--timeout", "900"],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
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


@pytest.mark.parametrize("stage", ["fetching", "training", "evaluating"])
async def test_postgres_down_for_a_minute_mid_stage(
    private_postgres: PostgresServer,
    servers: Any,
    pipeline_on: Any,
    simulator_server: Any,
    tmp_path: Path,
    stage: str,
) -> None:
    env = {"FETCHER_CONCURRENCY": "2"} if stage == "fetching" else {}
    async with pipeline_on(servers.amqp_url, private_postgres.url, **env) as pipeline:
        if stage == "fetching":  # ~25 s of downloads: the outage starts in the middle
            # Here, not before: entering pipeline_on resets the simulator's faults.
            simulator_server.set_faults(latency=0.5)
        pipeline.start_all()
        await asyncio.to_thread(pipeline.stack.wait_ready, 400)
        # Submitted and followed by `chouette train --wait`, which must ride out the outage.
        out, err = tmp_path / "cli.out", tmp_path / "cli.err"
        cli = await asyncio.to_thread(start_cli, pipeline.base_env(), out, err)
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
        await asyncio.sleep(OUTAGE_SECONDS)
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
