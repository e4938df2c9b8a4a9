"""Run the fetcher: ``python -m services.fetcher`` (settings from the environment)."""

from __future__ import annotations

from shared import startup

# First: a SIGTERM while the imports below run (seconds) exits cleanly.
startup.exit_on_sigterm()

from services.fetcher.client import ChouetteClient  # noqa: E402
from services.fetcher.handler import FetcherHandler  # noqa: E402
from shared.broker import FETCHER, Broker  # noqa: E402
from shared.db import Pool  # noqa: E402
from shared.messages import EvaluationRequested, TrainingRequested  # noqa: E402
from shared.runtime import run, serve  # noqa: E402
from shared.settings import FetcherSettings, Settings  # noqa: E402


async def main() -> None:
    settings = Settings()
    fetcher = FetcherSettings()
    # One HTTP session for the life of the process, closed after the consumer stops.
    async with ChouetteClient.open(settings, fetcher) as client:

        def make_handler(pool: Pool, broker: Broker, settings: Settings) -> FetcherHandler:
            return FetcherHandler(pool, client, fetcher)

        await serve(
            FETCHER,
            (TrainingRequested, EvaluationRequested),
            make_handler,
            prefetch=fetcher.prefetch,
            settings=settings,
        )


if __name__ == "__main__":
    run(main())
