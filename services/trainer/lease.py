"""The training lease: one trainer at a time per model, across processes and hosts.

RabbitMQ redelivers a message whose consumer outlived ``consumer_timeout`` (maybe to
another trainer), and a crashed trainer's message goes to the next one. A lease in
``models`` (owner, expiry; the SQL is in ``store.py``), renewed while training, tells
another trainer to wait until the model is trained or the lease lapses; a holder known to
be dead (same host, process gone) is taken over at once, so a restarted trainer resumes
immediately.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.trainer import store
from shared import db

logger = logging.getLogger(__name__)


def new_owner() -> str:
    """``host:pid:token``: a lease owner, unique per process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class TrainingLease:
    """The lease of ``model_id`` as ``owner`` sees it, held for ``seconds`` at a time."""

    pool: db.Pool
    model_id: int
    owner: str
    seconds: float

    async def acquire(self, finished: Callable[[], Awaitable[bool]]) -> bool:
        """Wait for the lease; False when ``finished()`` says another trainer finished."""
        model_id, seconds = self.model_id, self.seconds
        announced = False
        while True:
            holder = await store.claim_lease(self.pool, model_id, self.owner, seconds)
            if holder is None:
                return True
            if await finished():
                return False
            if holder.owner and is_dead_here(holder.owner):
                if await store.steal_lease(self.pool, model_id, self.owner, seconds, holder.owner):
                    logger.info(
                        "model %d: its trainer %s exited; taking over", model_id, holder.owner
                    )
                    return True
                continue
            if not announced:
                logger.info(
                    "model %d is being trained by %s (lease %.0f s left): waiting",
                    model_id, holder.owner, holder.seconds_left,
                )  # fmt: skip
                announced = True
            await asyncio.sleep(min(max(holder.seconds_left, 0.5), seconds / 3, 5.0))

    async def keep(self, lost: threading.Event) -> None:
        """Renew the lease until cancelled; set ``lost`` if another trainer took it."""
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                still_ours = await store.renew_lease(
                    self.pool, self.model_id, self.owner, self.seconds
                )
            except Exception as exc:  # the database is away: the lease has slack, go on
                logger.warning(
                    "model %d: could not renew the training lease: %s", self.model_id, exc
                )
                continue
            if not still_ours:
                logger.error("model %d: lease lost to another trainer; stopping", self.model_id)
                lost.set()
                return

    async def release(self) -> None:
        await store.release_lease(self.pool, self.model_id, self.owner)


def is_dead_here(owner: str) -> bool:
    """True when ``owner`` ("host:pid:token") ran on this host and its process is gone."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
