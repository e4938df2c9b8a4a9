"""``python -m services.trainer``: consume TrainingDatasetReady, publish ModelReady."""

from __future__ import annotations

from shared import startup

# First: a SIGTERM while the imports below run (seconds) exits cleanly.
startup.exit_on_sigterm()

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from services.trainer.cache_dir import sweep_stale  # noqa: E402
from services.trainer.handler import TrainerHandler  # noqa: E402
from services.trainer.thread import training_in_progress  # noqa: E402
from shared.broker import TRAINER, Broker  # noqa: E402
from shared.db import Pool  # noqa: E402
from shared.messages import TrainingDatasetReady  # noqa: E402
from shared.runtime import run, serve  # noqa: E402
from shared.settings import Settings, TrainerSettings  # noqa: E402


def make_handler(pool: Pool, broker: Broker, settings: Settings) -> TrainerHandler:
    from services.trainer.training import (
        configure_accelerator,  # lazy: TensorFlow, after SIGTERM is handled
    )

    trainer = TrainerSettings()
    # What trainings killed with `kill -9` left on disk (their lock died with them).
    sweep_stale(trainer.cache_dir)
    accelerator = configure_accelerator(
        mixed_precision=trainer.gpu_mixed_precision, xla=trainer.gpu_xla
    )
    return TrainerHandler(
        pool=pool, settings=trainer, accelerator=accelerator, stopping=broker.stopping
    )


async def main() -> None:
    trainer = TrainerSettings()
    await serve(
        TRAINER,
        (TrainingDatasetReady,),
        make_handler,
        prefetch=trainer.prefetch,
        grace=trainer.stop_grace_seconds,
    )


if __name__ == "__main__":
    run(main())
    if training_in_progress():
        # Abandoned in the middle of a step at shutdown: its message is unacked and will be
        # redelivered (resuming after the last checkpoint). Exit now rather than after the step.
        logging.getLogger("services.trainer").info("exiting without the abandoned training step")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
