"""One database with a tiny trained champion and one API server per test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shared.settings import ApiSettings
from tests.conftest import TEMPLATE_DB, Servers
from tests.integration.api import harness

TOKEN = "test-token-" + uuid.uuid4().hex
LIMITS = {"max_images": 4, "max_image_pixels": 100 * 100, "max_upload_bytes": 1 << 20}


@dataclass
class Api:
    url: str
    seeded: harness.Seeded
    model: Any  # the Keras model whose weights the champion holds
    thread: harness.ApiThread

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api(servers: Servers) -> Iterator[Api]:
    database_url = servers.database(f"api_{uuid.uuid4().hex[:12]}")
    harness.run(harness.create_database(servers.database_url, TEMPLATE_DB, database_url))
    try:
        seeded, model = harness.run(harness.seed(database_url))
        settings = ApiSettings(
            _env_file=None,  # type: ignore[call-arg]
            token=TOKEN,
            batch_wait_ms=20,
            **LIMITS,
        )
        # No periodic re-read within a test run: a champion change is seen through NOTIFY.
        thread = harness.ApiThread(database_url, settings, recheck_s=600.0)
        thread.start()
        try:
            yield Api(thread.url, seeded, model, thread)
        finally:
            thread.stop()
    finally:
        harness.run(harness.drop_database(servers.database_url, database_url))
