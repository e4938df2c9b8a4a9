"""A fetcher client wired to the in-process simulator, with recorded (instant) backoff
(its helpers: ``tests/plugins/fetcher.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from services.fetcher.client import ChouetteClient
from tests.plugins.fetcher import ClientFactory, SleepRecorder, fetcher_settings
from tests.plugins.simulator import SimulatorHandle


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
