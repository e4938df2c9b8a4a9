"""``python -m tests.faults.crash_loop``: a trainer whose handler kills its own process
(SIGKILL) on every delivery, as an out-of-memory kill would. Wired like a real service
(``shared.runtime.serve``), so it consumes its dead letters as every service does."""

from __future__ import annotations

import os
import signal
from typing import Any

from shared import startup

startup.exit_on_sigterm()

from shared.broker import TRAINER, Broker  # noqa: E402
from shared.db import Pool  # noqa: E402
from shared.messages import TrainingDatasetReady  # noqa: E402
from shared.runtime import run, serve  # noqa: E402
from shared.settings import Settings  # noqa: E402


def make_handler(pool: Pool, broker: Broker, settings: Settings) -> Any:
    async def handler(message: TrainingDatasetReady) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    return handler


if __name__ == "__main__":
    run(serve(TRAINER, (TrainingDatasetReady,), make_handler))
