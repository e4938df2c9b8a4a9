"""The one harness for running the services in tests (registered by ``tests/conftest.py``).

:class:`Harness` is the simulator and the services as real subprocesses
(``python -m services.<name>``, through the same :class:`localstack.processes.Stack` as the
demo and the benchmarks) with one environment (:func:`harness_env`): start, signal,
restart, wait until ready, stop, read their logs, and run ``python -m chouette`` as a user
does. When a test fails, the tail of every log of the harnesses it used is added to its
report (this module's ``pytest_runtest_makereport``: the one place that does it).

Two ways to use it:

- ``pipeline`` (per test, :class:`Pipeline`): the test's database, broker namespace and the
  session's simulator; nothing runs until the test starts it, and the test kills,
  signals and restarts processes and publishes its messages directly::

      async def test_x(pipeline: Pipeline) -> None:
          pipeline.start_all()
          request_id = await pipeline.submit_training(...)
          row = await pipeline.wait_for(request_id)

  ``PipelineFactory`` (the fault tests' ``pipeline_on``) makes the same on other servers.
- :func:`session_pipeline` (``tests/e2e``'s ``pipeline``, :class:`SessionPipeline`): one
  pipeline for the session, a database and a namespace of its own and its own simulator
  process, all started and ready, driven through the CLI (``pipeline.chouette(...)``).

Every process connects to PostgreSQL as its own role and to RabbitMQ as its own user where
the servers have them (``role_env``), never migrating nor declaring queues: each test on
this harness proves that the grants and permissions are enough.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import pytest

from localstack.processes import ROOT, SERVICES, Process, Stack, pipeline_env
from localstack.servers import free_port
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
from tests.plugins.servers import (
    Servers,
    create_database,
    declare_topology,
    delete_namespace,
    drop_database,
)

READY_TIMEOUT_S = float(os.environ.get("E2E_READY_TIMEOUT", "180"))
STOP_TIMEOUT_S = 30.0

# Simulator date ranges (seed 2020): a week with all three classes for training, the next
# week as the "later" range, and a range before the simulated field seasons (no images).
TRAIN_RANGE = ("2021-05-01", "2021-05-07")
LATER_RANGE = ("2021-05-11", "2021-05-17")
EMPTY_RANGE = ("2019-01-01", "2019-01-31")


def harness_env(
    *,
    amqp_url: str,
    database_url: str,
    namespace: str,
    delivery_limit: int,
    simulator_port: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every process of a harness: the test run's own, less its
    ``FETCHER_``/``TRAINER_`` settings (they would change what a test measures), pointed at
    the given servers (``localstack.processes.pipeline_env``), then ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FETCHER_", "TRAINER_"))}
    env = pipeline_env(
        amqp_url=amqp_url,
        database_url=database_url,
        namespace=namespace,
        simulator_port=simulator_port,
        base=base,
    )
    env.update({"BROKER_DELIVERY_LIMIT": str(delivery_limit), "LOG_LEVEL": "INFO"})
    env.update(extra or {})
    return env


def chouette_argv(*argv: str) -> list[str]:
    """The console entry point as a user runs it: ``python -m chouette ARGV``."""
    return [sys.executable, "-m", "chouette", *argv]


class Harness:
    """Processes of one pipeline, logging to files under ``logdir``."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.stack = Stack(env, logdir)

    @property
    def env(self) -> dict[str, str]:
        """Every process's environment (``chouette`` commands' too)."""
        return self.stack.env

    @property
    def logdir(self) -> Path:
        return self.stack.logdir

    @property
    def services(self) -> Mapping[str, Process]:
        return self.stack.processes

    # -- processes ----------------------------------------------------------------------------

    def start(self, name: str, key: str | None = None, **env: str) -> Process:
        """Start ``services.<name>`` as ``key`` (default: the name), ``env`` added."""
        return self.stack.launch(name, key, env)

    def start_all(self, names: Iterable[str] = SERVICES, **env: str) -> None:
        for name in names:
            self.start(name, **env)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every started process says it is ready; raises if one exits meanwhile."""
        self.stack.wait_ready(timeout)

    def signal(self, key: str, sig: int = signal.SIGKILL) -> None:
        self.services[key].popen.send_signal(sig)

    def wait_exit(self, key: str, timeout: float) -> int:
        return self.services[key].popen.wait(timeout)

    def stop_all(self, timeout: float = 15) -> None:
        """SIGTERM every process (newest first), kill what outlives ``timeout``."""
        self.stack.stop(timeout)

    def check_alive(self) -> None:
        dead = self.stack.dead()
        if dead:
            raise AssertionError(f"service(s) exited: {dead}\n{self.log_tails()}")

    # -- the CLI ------------------------------------------------------------------------------

    def chouette(self, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``chouette ARGV`` as a user runs it; raises if it outlives ``timeout``."""
        return subprocess.run(
            chouette_argv(*argv),
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn_chouette(
        self, *argv: str, stdout: IO[bytes], stderr: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """``chouette ARGV`` started in the background, its output in the given files."""
        return subprocess.Popen(
            chouette_argv(*argv), cwd=ROOT, env=self.env, stdout=stdout, stderr=stderr
        )

    # -- logs ---------------------------------------------------------------------------------

    def logs(self) -> str:
        """The end of every process's log (for assertion messages)."""
        return "\n".join(f"===== {k} =====\n{p.text()[-6000:]}" for k, p in self.services.items())

    def log_tails(self, lines: int = 60) -> str:
        """The last ``lines`` of every process's log, with its exit status."""
        return self.stack.log_tails(lines)


class Pipeline(Harness):
    """A harness on one test's database and namespace, with its pool and broker to seed,
    publish and poll."""

    def __init__(
        self,
        settings: Settings,
        pool: db.Pool,
        broker: Broker,
        logdir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker
        extra = {"AMQP_HEARTBEAT": "10", "TRAINER_STOP_GRACE_SECONDS": "2", **(env or {})}
        super().__init__(
            harness_env(
                amqp_url=settings.amqp_url.get_secret_value(),
                database_url=settings.database_url.get_secret_value(),
                namespace=settings.broker_namespace,
                delivery_limit=settings.broker_delivery_limit,
                simulator_port=None,  # the session's simulator: in ``env``
                extra=extra,
            ),
            logdir,
        )

    # -- requests -----------------------------------------------------------------------------

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


@dataclass
class PipelineFactory:
    """``async with factory(amqp_url, database_url) as p:``: a :class:`Pipeline` on other
    servers than the session's (a fault test's own, which it stops and restarts). The
    database is migrated here; the services connect as its owner."""

    simulator_server: Any
    namespace: str
    logdir: Path
    made: list[Pipeline] = field(default_factory=list)

    @asynccontextmanager
    async def __call__(
        self, amqp_url: str, database_url: str, *, delivery_limit: int = 5, **env: str
    ) -> AsyncIterator[Pipeline]:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            amqp_url=amqp_url,
            database_url=database_url,
            broker_namespace=self.namespace,
            broker_delivery_limit=delivery_limit,
        )
        pool = await db.create_pool(database_url, max_size=4)
        await db.migrate(pool)
        broker = Broker(amqp_url, namespace=self.namespace, delivery_limit=delivery_limit)
        await broker.connect()
        self.simulator_server.reset()
        env = {**self.simulator_server.env(), **env}
        pipeline = Pipeline(settings, pool, broker, self.logdir, env=env)
        self.made.append(pipeline)
        try:
            yield pipeline
        finally:
            pipeline.stop_all()
            await broker.close()
            await pool.close()
            self.simulator_server.reset()


class SessionPipeline(Harness):
    """The simulator and the services of one session, on a database and a namespace of
    their own (:func:`session_pipeline`)."""

    def __init__(
        self, env: dict[str, str], logdir: Path, database_url: str, namespace: str
    ) -> None:
        super().__init__(env, logdir)
        self.database_url = database_url
        self.namespace = namespace

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """The rows of ``sql``, read as the database's owner (for sync tests)."""

        async def go() -> list[dict[str, Any]]:
            pool = await db.create_pool(self.database_url, max_size=1)
            try:
                return [dict(r) for r in await pool.fetch(sql, *args)]
            finally:
                await pool.close()

        return asyncio.run(go())


def missing_services() -> list[str]:
    return [
        name
        for name in (*SERVICES, "simulator")
        if importlib.util.find_spec(f"services.{name}.__main__") is None
    ]


@contextmanager
def session_pipeline(servers: Servers, logins: Mapping[str, Login]) -> Iterator[SessionPipeline]:
    """Start the simulator and the services on a new database and namespace of the test
    servers, wait until they are ready; stop them with SIGTERM and remove both at the end.
    The logs are removed too unless ``E2E_KEEP_LOGS`` is set (failures show their tails)."""
    missing = missing_services()
    if missing:
        pytest.fail(f"services missing: {', '.join(missing)}")
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    database_url = asyncio.run(create_database(servers, name))
    namespace = f"e2e{uuid.uuid4().hex[:8]}"
    # Every service and every `chouette` command connects as its own role and RabbitMQ
    # user, never migrating nor declaring: the administrator declares the queues first.
    env = harness_env(
        amqp_url=servers.amqp_url,
        database_url=database_url,
        namespace=namespace,
        delivery_limit=3,
        simulator_port=free_port(),
        extra=role_env(database_url, logins, servers.users_amqp_url),
    )
    asyncio.run(declare_topology(servers.amqp_url, namespace, delivery_limit=3))
    pipeline = SessionPipeline(
        env, Path(tempfile.mkdtemp(prefix="chouette-e2e-")), database_url, namespace
    )
    try:
        pipeline.start_all(("simulator", *SERVICES))
        pipeline.wait_ready(READY_TIMEOUT_S)
        yield pipeline
    finally:
        pipeline.stop_all(STOP_TIMEOUT_S)
        asyncio.run(drop_database(servers, name))
        asyncio.run(delete_namespace(servers.amqp_url, namespace))
        if not os.environ.get("E2E_KEEP_LOGS"):
            shutil.rmtree(pipeline.logdir, ignore_errors=True)


@pytest.fixture
async def pipeline(
    settings: Settings,
    pool: db.Pool,
    broker: Broker,
    simulator_server: Any,
    role_logins: dict[str, Login],
    servers: Servers,
    tmp_path: Path,
) -> AsyncIterator[Pipeline]:
    simulator_server.reset()
    # Each service connects as its own login role and RabbitMQ user (tests/plugins/roles.py)
    # and neither migrates nor declares (``broker`` declared the queues): every test on
    # this harness proves that the role's grants and the user's permissions are enough.
    roles = role_env(settings.database_url.get_secret_value(), role_logins, servers.users_amqp_url)
    p = Pipeline(settings, pool, broker, tmp_path, env={**simulator_server.env(), **roles})
    try:
        yield p
    finally:
        p.stop_all()
        simulator_server.reset()


def harnesses(item: pytest.Item) -> list[Harness]:
    """The harnesses a test used: its fixtures' values, and what its factories made."""
    found: list[Harness] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Harness):
            found.append(value)
        elif isinstance(value, PipelineFactory):
            found += value.made
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test's report gets the tail of every service log of its harnesses."""
    report = yield
    if report.failed:
        for harness in harnesses(item):
            report.sections.append((f"service logs ({harness.logdir})", harness.log_tails()))
    return report
