"""One database with a tiny trained champion and one API server per test module."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from shared.settings import ApiSettings
from tests.integration.api.helpers import LIMITS, TOKEN, Api, ApiThread
from tests.plugins.models import seed
from tests.plugins.servers import Servers, create_database, drop_database


@pytest.fixture(scope="module")
def api(servers: Servers) -> Iterator[Api]:
    name = f"api_{uuid.uuid4().hex[:12]}"
    database_url = asyncio.run(create_database(servers, name))
    try:
        seeded, model = asyncio.run(seed(database_url))
        settings = ApiSettings(
            _env_file=None,  # type: ignore[call-arg]
            token=TOKEN,
            batch_wait_ms=20,
            **LIMITS,
        )
        # No periodic re-read within a test run: a champion change is seen through NOTIFY.
        thread = ApiThread(database_url, settings, recheck_s=600.0)
        thread.start()
        try:
            yield Api(thread.url, seeded, model, thread)
        finally:
            thread.stop()
    finally:
        asyncio.run(drop_database(servers, name))
