"""The end-to-end harness: the simulator and the three services as real subprocesses.

``pipeline`` (session) creates a database and a broker namespace of its own on the test
servers, starts ``python -m services.simulator|fetcher|trainer|evaluator`` with
``AMQP_URL``/``DATABASE_URL``/``BROKER_NAMESPACE``/``CHOUETTE_API_URL`` pointing at them,
each connecting to PostgreSQL as its own role and to RabbitMQ as its own user
(``role_env``: the CLI too), waits until
each says it is ready, and stops them with SIGTERM at the end. Their logs go to
files; when an e2e test fails, the tail of every log is added to its report (set
``E2E_KEEP_LOGS=1`` to keep the whole files).

``pipeline.chouette(*argv)`` runs the real console entry point (``python -m chouette``)
in a subprocess with the same environment.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from localstack.processes import ROOT, SERVICES, Stack, pipeline_env
from localstack.servers import free_port
from shared import db
from shared.broker import Broker
from tests.plugins.roles import Login, role_env

READY_TIMEOUT_S = float(os.environ.get("E2E_READY_TIMEOUT", "180"))
STOP_TIMEOUT_S = 30.0

# Simulator date ranges (seed 2020): a week with all three classes for training, the next
# week as the "later" range, and a range before the simulated field seasons (no images).
TRAIN_RANGE = ("2021-05-01", "2021-05-07")
LATER_RANGE = ("2021-05-11", "2021-05-17")
EMPTY_RANGE = ("2019-01-01", "2019-01-31")


@dataclass
class Pipeline:
    stack: Stack
    database_url: str
    namespace: str

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env

    def chouette(self, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``chouette ARGV`` as a user runs it; raises if it outlives ``timeout``."""
        return subprocess.run(
            [sys.executable, "-m", "chouette", *argv],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            pool = await db.create_pool(self.database_url, max_size=1)
            try:
                return [dict(r) for r in await pool.fetch(sql, *args)]
            finally:
                await pool.close()

        return asyncio.run(go())

    def log_tails(self, lines: int = 60) -> str:
        return self.stack.log_tails(lines)

    def check_alive(self) -> None:
        dead = self.stack.dead()
        if dead:
            raise AssertionError(f"service(s) exited: {dead}\n{self.log_tails()}")


def _missing_services() -> list[str]:
    return [
        name
        for name in (*SERVICES, "simulator")
        if importlib.util.find_spec(f"services.{name}.__main__") is None
    ]


async def _create_database(admin_url: str, database_url: str, name: str) -> None:
    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    con = await asyncpg.connect(database_url)
    try:
        await db.migrate(con)
    finally:
        await con.close()


async def declare_topology(amqp_url: str, namespace: str, *, delivery_limit: int) -> None:
    broker = Broker(amqp_url, namespace=namespace, delivery_limit=delivery_limit)
    await broker.connect()
    await broker.close()


async def _drop_database(admin_url: str, name: str) -> None:
    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


@pytest.fixture(scope="session")
def pipeline(servers: Any, role_logins: dict[str, Login]) -> Iterator[Pipeline]:
    missing = _missing_services()
    if missing:
        pytest.fail(f"services missing: {', '.join(missing)}")
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    database_url = servers.database(name)
    asyncio.run(_create_database(servers.database_url, database_url, name))
    namespace = f"e2e{uuid.uuid4().hex[:8]}"
    env = pipeline_env(
        amqp_url=servers.amqp_url,
        database_url=database_url,
        namespace=namespace,
        simulator_port=free_port(),
    )
    env.update({"BROKER_DELIVERY_LIMIT": "3", "LOG_LEVEL": "INFO"})
    # Every service and every `chouette` command connects as its own role and RabbitMQ
    # user, never migrating nor declaring: the administrator declares the queues first.
    env.update(role_env(database_url, role_logins, servers.users_amqp_url))
    asyncio.run(declare_topology(servers.amqp_url, namespace, delivery_limit=3))
    stack = Stack(env, Path(tempfile.mkdtemp(prefix="chouette-e2e-")))
    try:
        stack.start(("simulator", *SERVICES))
        stack.wait_ready(READY_TIMEOUT_S)
        yield Pipeline(stack, database_url, namespace)
    finally:
        stack.stop(STOP_TIMEOUT_S)
        asyncio.run(_drop_database(servers.database_url, name))
        _delete_namespace(servers.amqp_url, namespace)
        if not os.environ.get("E2E_KEEP_LOGS"):  # failures already show the log tails
            shutil.rmtree(stack.logdir, ignore_errors=True)


def _delete_namespace(amqp_url: str, namespace: str) -> None:
    from tests.conftest import delete_namespace

    asyncio.run(delete_namespace(amqp_url, namespace))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        pipe = getattr(item, "funcargs", {}).get("pipeline")
        if isinstance(pipe, Pipeline):
            report.sections.append(("service logs", pipe.log_tails()))
    return report
