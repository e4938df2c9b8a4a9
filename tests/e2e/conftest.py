"""The end-to-end harness: the simulator and the three services as real subprocesses.

``pipeline`` (session) creates a database and a broker namespace of its own on the test
servers, starts ``python -m services.simulator|fetcher|trainer|evaluator`` with
``AMQP_URL``/``DATABASE_URL``/``BROKER_NAMESPACE``/``CHOUETTE_API_URL`` pointing at them,
waits until each says it is ready, and stops them with SIGTERM at the end. Their logs go to
files; when an e2e test fails, the tail of every log is added to its report.

``pipeline.chouette(*argv)`` runs the real console entry point (``python -m shared.cli``)
in a subprocess with the same environment.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared import db
from shared.local_services import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("fetcher", "trainer", "evaluator")
READY_TIMEOUT_S = float(os.environ.get("E2E_READY_TIMEOUT", "180"))
STOP_TIMEOUT_S = 30.0

# Simulator date ranges (seed 2020): a week with all three classes for training, the next
# week as the "later" range, and a range before the simulated field seasons (no images).
TRAIN_RANGE = ("2021-05-01", "2021-05-07")
LATER_RANGE = ("2021-05-11", "2021-05-17")
EMPTY_RANGE = ("2019-01-01", "2019-01-31")


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Pipeline:
    env: dict[str, str]
    database_url: str
    namespace: str
    api_url: str
    workdir: Path
    services: dict[str, Service] = field(default_factory=dict)

    def chouette(self, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``chouette ARGV`` as a user runs it; raises if it outlives ``timeout``."""
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *argv],
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
        return "\n\n".join(
            f"--- {s.name} (exit {s.process.poll()}) ---\n{s.tail(lines)}"
            for s in self.services.values()
        )

    def check_alive(self) -> None:
        dead = [s.name for s in self.services.values() if s.process.poll() is not None]
        if dead:
            raise AssertionError(f"service(s) exited: {dead}\n{self.log_tails()}")


def _missing_services() -> list[str]:
    return [
        name
        for name in (*SERVICES, "simulator")
        if importlib.util.find_spec(f"services.{name}.__main__") is None
    ]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _start(name: str, env: dict[str, str], logdir: Path) -> Service:
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C on pytest does not hit them before teardown
        )
    return Service(name, process, log)


def _wait_ready(service: Service, is_ready: Any, deadline: float) -> None:
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited at start-up:\n{service.tail()}")
        if is_ready(service):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{service.name} not ready after {READY_TIMEOUT_S}s:\n{service.tail()}")


def _stop(service: Service) -> None:
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(5)


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


async def _drop_database(admin_url: str, name: str) -> None:
    con = await asyncpg.connect(admin_url)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


@pytest.fixture(scope="session")
def pipeline(servers: Any) -> Iterator[Pipeline]:
    missing = _missing_services()
    if missing:
        pytest.skip(f"services not written yet: {', '.join(missing)}")
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    database_url = servers.database(name)
    asyncio.run(_create_database(servers.database_url, database_url, name))
    namespace = f"e2e{uuid.uuid4().hex[:8]}"
    sim_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="chouette-e2e-"))
    env = {
        **os.environ,
        "AMQP_URL": servers.amqp_url,
        "DATABASE_URL": database_url,
        "BROKER_NAMESPACE": namespace,
        "BROKER_DELIVERY_LIMIT": "3",
        "CHOUETTE_API_URL": f"http://127.0.0.1:{sim_port}",
        # Never the real API from a developer's .env: the simulator accepts anyone.
        "CHOUETTE_USERNAME": "",
        "CHOUETTE_PASSWORD": "",
        "SIMULATOR_HOST": "127.0.0.1",
        "SIMULATOR_PORT": str(sim_port),
        "SIMULATOR_USERNAME": "",
        "SIMULATOR_PASSWORD": "",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    pipe = Pipeline(env, database_url, namespace, env["CHOUETTE_API_URL"], workdir)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pipe.services["simulator"] = _start("simulator", env, workdir)
        for service in SERVICES:
            pipe.services[service] = _start(service, env, workdir)
        _wait_ready(pipe.services["simulator"], lambda _s: _port_open(sim_port), deadline)
        for service in SERVICES:
            _wait_ready(
                pipe.services[service],
                lambda s: f"{s.name} ready" in s.log.read_text(errors="replace"),
                deadline,
            )
        yield pipe
    finally:
        for service in reversed(list(pipe.services.values())):
            _stop(service)
        asyncio.run(_drop_database(servers.database_url, name))
        _delete_namespace(servers.amqp_url, namespace)


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
