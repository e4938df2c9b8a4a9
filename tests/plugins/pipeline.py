"""Services as real subprocesses, for fault tests and service-level integration tests.

``pipeline`` starts ``python -m services.<name>`` processes (through the same
:class:`localstack.processes.Stack` as the demo, the benchmarks and the e2e harness) against
this test's database, broker namespace and the session's simulator, and stops them all at
the end. Each service connects as its own PostgreSQL role and RabbitMQ user (``role_env``),
never migrating nor declaring queues.
Fault tests kill, signal and restart them::

    async def test_x(pipeline: Pipeline) -> None:
        pipeline.start("fetcher"); pipeline.start("trainer"); pipeline.start("evaluator")
        request_id = await pipeline.submit_training(...)
        row = await pipeline.wait_for(request_id)

Unlike the e2e harness (one pipeline for the session, driven through the CLI), each test
gets its own processes and publishes its messages directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from localstack.processes import Process, Stack, pipeline_env
from shared import db
from shared.broker import Broker
from shared.messages import (
    DatasetSpec,
    EvaluationRequested,
    TrainingParams,
    TrainingRequested,
)
from shared.settings import Settings
from tests.plugins.roles import Login, role_env


@dataclass
class Pipeline:
    settings: Settings
    pool: db.Pool
    broker: Broker
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    stack: Stack = field(init=False)

    def __post_init__(self) -> None:
        self.stack = Stack(self.base_env(), self.log_dir)

    def base_env(self) -> dict[str, str]:
        s = self.settings
        # The test run's own FETCHER_/TRAINER_ settings would change what a test measures.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FETCHER_", "TRAINER_"))}
        env = pipeline_env(
            amqp_url=s.amqp_url.get_secret_value(),
            database_url=s.database_url.get_secret_value(),
            namespace=s.broker_namespace,
            simulator_port=None,  # the session's simulator: in ``env``
            base=base,
        )
        env.update(
            {
                "BROKER_DELIVERY_LIMIT": str(s.broker_delivery_limit),
                "AMQP_HEARTBEAT": "10",
                "LOG_LEVEL": "INFO",
                "TRAINER_STOP_GRACE_SECONDS": "2",
                **self.env,
            }
        )
        return env

    @property
    def services(self) -> Mapping[str, Process]:
        return self.stack.processes

    def start(self, name: str, key: str | None = None, **env: str) -> Process:
        """Start ``services.<name>`` as ``key`` (default: the name)."""
        return self.stack.launch(name, key, env)

    def start_all(self, **env: str) -> None:
        for name in ("fetcher", "trainer", "evaluator"):
            self.start(name, **env)

    def signal(self, key: str, sig: int = signal.SIGKILL) -> None:
        self.services[key].popen.send_signal(sig)

    def wait_exit(self, key: str, timeout: float) -> int:
        return self.services[key].popen.wait(timeout)

    def stop_all(self, timeout: float = 15) -> None:
        self.stack.stop(timeout)

    def logs(self) -> str:
        return "\n".join(f"===== {k} =====\n{p.text()[-6000:]}" for k, p in self.services.items())

    # -- requests ---------------------------------------------------------------------------

    async def submit_training(
        self,
        start: str = "2021-05-01",
        end: str = "2021-06-30",
        **training: Any,
    ) -> uuid.UUID:
        # One pass per epoch: the tests' datasets are tiny, and their epochs short.
        params = {
            "architecture": "ResNet50", "epochs": 1, "image_size": 32, "batch_size": 8,
            "min_images_per_epoch": 0,
        }  # fmt: skip
        params.update(training)
        message = TrainingRequested(
            request_id=uuid.uuid4(),
            dataset=DatasetSpec(
                start_date=dt.date.fromisoformat(start), end_date=dt.date.fromisoformat(end)
            ),
            training=TrainingParams(**params),
        )
        await db.ensure_request(
            self.pool, message.request_id, "training", message.model_dump(mode="json")
        )
        await self.broker.publish(message)
        return message.request_id

    async def submit_evaluation(
        self, model_id: int, start: str | None = None, end: str | None = None
    ) -> uuid.UUID:
        dataset = None
        if start and end:
            dataset = DatasetSpec(
                start_date=dt.date.fromisoformat(start), end_date=dt.date.fromisoformat(end)
            )
        message = EvaluationRequested(request_id=uuid.uuid4(), model_id=model_id, dataset=dataset)
        await db.ensure_request(
            self.pool, message.request_id, "evaluation", message.model_dump(mode="json")
        )
        await self.broker.publish(message)
        return message.request_id

    async def wait_for(
        self, request_id: uuid.UUID, timeout: float = 600, statuses: tuple[str, ...] = ()
    ) -> asyncpg.Record:
        """Wait until the request is final (or in one of ``statuses``); fail with the logs."""
        final = statuses or ("succeeded", "failed")
        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            try:
                row = await self.pool.fetchrow(
                    "SELECT * FROM training_requests WHERE id = $1", request_id
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                row = None  # the database is being restarted by the test
            if row is not None and row["status"] in final:
                return row
            await asyncio.sleep(0.5)
        pytest.fail(
            f"request {request_id} not done in {timeout}s: {row and dict(row)}\n{self.logs()}"
        )

    async def wait_until(self, sql: str, *args: Any, timeout: float = 120) -> Any:
        """Poll ``sql`` until it returns a truthy value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = await self.pool.fetchval(sql, *args)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                value = None
            if value:
                return value
            await asyncio.sleep(0.3)
        pytest.fail(f"timed out waiting for: {sql} {args}\n{self.logs()}")


@pytest.fixture
async def pipeline(
    settings: Settings,
    pool: db.Pool,
    broker: Broker,
    simulator_server: Any,
    role_logins: dict[str, Login],
    servers: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Pipeline]:
    simulator_server.reset()
    # Each service connects as its own login role and RabbitMQ user (tests/plugins/roles.py)
    # and neither migrates nor declares (``broker`` declared the queues): every test on
    # this harness proves that the role's grants and the user's permissions are enough.
    roles = role_env(settings.database_url.get_secret_value(), role_logins, servers.users_amqp_url)
    env = {**simulator_server.env(), **roles}
    p = Pipeline(settings, pool, broker, tmp_path, env=env)
    try:
        yield p
    finally:
        p.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(p.logs())
        simulator_server.reset()
