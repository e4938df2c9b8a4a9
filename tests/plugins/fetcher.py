"""What the fetcher's tests (unit and integration) share: its settings for tests and a
stand-in for the backoff's sleep. The fixtures that use them: ``tests/unit/fetcher/conftest.py``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from services.fetcher.client import ChouetteClient
from shared.settings import FetcherSettings


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
