"""``python -m services.trainer``: consume DatasetReady(training), publish ModelReady."""

from __future__ import annotations

import logging
import os
import sys

from services.trainer.handler import TrainerHandler, training_in_progress
from shared.broker import TRAINER, Broker
from shared.db import Pool
from shared.messages import DatasetReady
from shared.runtime import run, serve
from shared.settings import Settings, TrainerSettings


def make_handler(pool: Pool, broker: Broker, settings: Settings) -> TrainerHandler:
    from services.trainer.training import configure_accelerator

    trainer = TrainerSettings()
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
        (DatasetReady,),
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
