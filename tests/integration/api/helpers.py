"""The API (``services.api``) served from a thread over real HTTP, and what its tests share.

The database it serves is seeded by :func:`tests.plugins.models.seed`; ``conftest.py``'s
``api`` fixture (one per test module) puts the two together as an :class:`Api`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import uvicorn

from localstack.servers import free_port
from shared.settings import ApiSettings
from tests.plugins.models import Seeded

TOKEN = "test-token-" + uuid.uuid4().hex
LIMITS = {"max_images": 4, "max_image_pixels": 100 * 100, "max_upload_bytes": 1 << 20}


class ApiThread:
    """The API app (``services.api``) under uvicorn on a free loopback port, in a thread of
    its own with its own event loop, for the tests of one module."""

    def __init__(self, database_url: str, settings: ApiSettings, **lifespan_kw: Any) -> None:
        from services.api.app import create_app
        from services.api.resources import lifespan
        from services.api.version import version_info

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, lifespan(database_url, settings, **lifespan_kw),
                              version_info())  # fmt: skip
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
            lifespan="on",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self, timeout: float = 120) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@dataclass
class Api:
    url: str
    seeded: Seeded
    model: Any  # the Keras model whose weights the champion holds
    thread: ApiThread

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}
