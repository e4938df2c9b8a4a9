"""A fetcher client wired to the in-process simulator, with recorded (instant) backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from services.fetcher.client import ChouetteClient
from shared.settings import FetcherSettings
from tests.plugins.simulator import SimulatorHandle


class SleepRecorder:
    """Stands in for asyncio.sleep in the client's backoff: records, returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def fetcher_settings(**overrides: Any) -> FetcherSettings:
    values: dict[str, Any] = {
        "concurrency": 8,
        "request_timeout": 5.0,
        "max_retries": 3,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    values.update(overrides)
    return FetcherSettings(_env_file=None, **values)  # type: ignore[call-arg]


ClientFactory = Callable[..., AbstractAsyncContextManager[ChouetteClient]]


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def open_client(simulator: SimulatorHandle, sleeps: SleepRecorder) -> ClientFactory:
    """``async with open_client(auth="basic", max_retries=1) as client: ...``"""

    def factory(
        sim: SimulatorHandle | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[ChouetteClient]:
        sim = sim or simulator
        shared_keys = {"chouette_auth", "chouette_username", "chouette_password"}
        shared = {k: v for k, v in overrides.items() if k in shared_keys}
        fetcher = {k: v for k, v in overrides.items() if k not in shared_keys}
        return ChouetteClient.open(
            sim.settings(**shared), fetcher_settings(**fetcher), sleep=sleeps
        )

    return factory


@pytest.fixture
async def client(open_client: ClientFactory) -> AsyncIterator[ChouetteClient]:
    async with open_client() as c:
        yield c
