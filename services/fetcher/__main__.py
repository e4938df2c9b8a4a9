"""Run the fetcher: ``python -m services.fetcher`` (settings from the environment)."""

from __future__ import annotations

from services.fetcher.client import ChouetteClient
from services.fetcher.handler import FetcherHandler
from shared.broker import FETCHER, Broker
from shared.db import Pool
from shared.messages import EvaluationRequested, TrainingRequested
from shared.runtime import run, serve
from shared.settings import FetcherSettings, Settings


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
