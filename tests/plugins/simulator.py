"""Simulator fixtures (owned by the fetcher work), registered by ``tests/conftest.py``.

- ``simulator``: an in-process simulator on a free 127.0.0.1 port for one async test.
  ``sim.url``, ``sim.username``/``sim.password``, ``sim.faults`` (mutable, takes effect on
  the next request), ``sim.set_faults(latency=0.02, ...)``, ``sim.stats`` (request
  counters: ``login``, ``listing``, ``media``, ``downloads``...), ``sim.settings(**kw)``
  (a :class:`Settings` pointing at it) and ``sim.env()`` (environment for a subprocess).
- ``simulator_factory``: ``await simulator_factory(faults=Faults(...), username="", ...)``
  for more than one simulator or custom start-up settings.
- ``simulator_server``: one simulator for the whole session in a background thread, for
  tests whose services run in subprocesses (or sync tests). Its faults change through
  ``set_faults`` (thread-safe) and must be reset by the test that changes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from services.simulator.app import SIMULATOR, Simulator, create_app
from services.simulator.settings import Faults, SimulatorSettings
from shared.settings import Settings

TEST_USERNAME = "field-tester"
TEST_PASSWORD = "s3cret-not-logged"


@dataclasses.dataclass
class SimulatorHandle:
    url: str
    app: web.Application
    loop: asyncio.AbstractEventLoop | None = None  # set when it runs in another thread

    @property
    def state(self) -> Simulator:
        return self.app[SIMULATOR]

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @property
    def stats(self) -> Counter[str]:
        """A copy of the request counters (a missing key reads 0)."""
        return Counter(self.state.stats)

    @property
    def username(self) -> str:
        return self.state.settings.username

    @property
    def password(self) -> str:
        return self.state.settings.password

    def _in_loop(self, fn: Callable[[], Any]) -> None:
        if self.loop is None:
            fn()
            return
        done = threading.Event()

        def call() -> None:
            try:
                fn()
            finally:
                done.set()

        self.loop.call_soon_threadsafe(call)
        done.wait(5)

    def set_faults(self, **changes: Any) -> None:
        self._in_loop(lambda: self.faults.update(**changes))

    def reset(self) -> None:
        """Faults back to the start-up ones, counters to zero."""
        self._in_loop(self.state.reset)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "chouette_api_url": self.url,
            "chouette_username": self.username,
            "chouette_password": self.password,
            "chouette_auth": "auto",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def env(self) -> dict[str, str]:
        return {
            "CHOUETTE_API_URL": self.url,
            "CHOUETTE_USERNAME": self.username,
            "CHOUETTE_PASSWORD": self.password,
            "CHOUETTE_AUTH": "auto",
        }


def _settings(**overrides: Any) -> SimulatorSettings:
    values: dict[str, Any] = {"username": TEST_USERNAME, "password": TEST_PASSWORD}
    values.update(overrides)
    return SimulatorSettings(_env_file=None, **values)  # type: ignore[call-arg]


async def start_simulator(
    faults: Faults | None = None, **settings: Any
) -> tuple[SimulatorHandle, web.AppRunner]:
    """Start a simulator in the running loop on a free port; stop it with ``runner.cleanup()``."""
    sim_settings = _settings(host="127.0.0.1", port=0, **settings)
    app = create_app(sim_settings, faults)
    # Short shutdown: a test may leave a request hanging on purpose.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # the OS picks a free port: no race
    await site.start()
    port = runner.addresses[0][1]
    return SimulatorHandle(url=f"http://127.0.0.1:{port}", app=app), runner


SimulatorFactory = Callable[..., Awaitable[SimulatorHandle]]


@pytest.fixture
async def simulator_factory() -> AsyncIterator[SimulatorFactory]:
    runners: list[web.AppRunner] = []

    async def start(faults: Faults | None = None, **settings: Any) -> SimulatorHandle:
        handle, runner = await start_simulator(faults, **settings)
        runners.append(runner)
        return handle

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def simulator(simulator_factory: SimulatorFactory) -> SimulatorHandle:
    return await simulator_factory()


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[SimulatorHandle]:
    loop = asyncio.new_event_loop()
    started: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["handle"], started["runner"] = loop.run_until_complete(start_simulator())
        except BaseException as exc:  # reported to the fixture below
            started["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(started["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="simulator", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the simulator did not start within 30 s")
    if "error" in started:
        raise started["error"]
    handle: SimulatorHandle = started["handle"]
    handle.loop = loop
    yield handle
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
