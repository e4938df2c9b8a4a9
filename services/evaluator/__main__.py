"""``python -m services.evaluator``: score trained models and stored date ranges.

Consumes ``ModelReady`` (a model's held-out test split) and ``EvaluationDatasetReady`` for
evaluation (another date range), publishes ``ModelEvaluated``. Settings come from the
environment: the shared ones (``AMQP_URL``, ``DATABASE_URL``, …) and ``EVALUATOR_*``.
"""

from __future__ import annotations

import functools

from shared import startup

# First: a SIGTERM while the imports below run (seconds) exits cleanly.
startup.exit_on_sigterm()

from services.evaluator.handler import Evaluator, graph_scorer  # noqa: E402
from shared import db  # noqa: E402
from shared.broker import EVALUATOR, Broker  # noqa: E402
from shared.messages import EvaluationDatasetReady, ModelReady  # noqa: E402
from shared.runtime import run, serve  # noqa: E402
from shared.settings import EvaluatorSettings, Settings  # noqa: E402
from shared.weight_store import load_model  # noqa: E402


def main() -> None:
    evaluator_settings = EvaluatorSettings()

    def make_handler(pool: db.Pool, broker: Broker, settings: Settings) -> Evaluator:
        return Evaluator(
            pool,
            evaluator_settings,
            load_model=load_model,
            make_scorer=functools.partial(graph_scorer, tta=evaluator_settings.tta),
        )

    run(
        serve(
            EVALUATOR,
            (ModelReady, EvaluationDatasetReady),
            make_handler,
            prefetch=evaluator_settings.prefetch,
        )
    )


if __name__ == "__main__":
    main()
