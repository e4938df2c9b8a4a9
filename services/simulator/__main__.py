"""Run the Chouette API simulator: ``python -m services.simulator`` (SIMULATOR_* settings)."""

from __future__ import annotations

import logging

from aiohttp import web

from services.simulator.app import create_app
from services.simulator.settings import SimulatorSettings
from shared import logs
from shared.runtime import new_event_loop
from shared.settings import Settings

logger = logging.getLogger(__name__)


def main() -> None:
    shared = Settings()
    logs.configure(shared.log_level, shared.log_format)
    settings = SimulatorSettings()
    logger.info(
        "Chouette API simulator on http://%s:%d (seed %d, %s)",
        settings.host,
        settings.port,
        settings.seed,
        "credentials required" if settings.username else "open access",
    )
    web.run_app(
        create_app(settings),
        loop=new_event_loop(),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=2.0,
    )


if __name__ == "__main__":
    main()
