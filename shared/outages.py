"""Waiting out a database outage instead of failing the message.

A handler that fails because PostgreSQL is unreachable has done nothing wrong: requeueing
its message would spend a delivery per attempt, and RabbitMQ would dead-letter a healthy
request after a few seconds of outage. So when a handler (or recording a failure) raises,
the broker layer asks :meth:`OutageWait.waited_out` first: it probes the database and,
when the probe fails, waits with a bounded backoff until the database answers again, then
the same delivery is handled again. Only when the database answers (a real failure of the
message) or the outage outlasts ``max_seconds`` does the usual requeue path run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared import backoff

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[object]]


@dataclass
class OutageWait:
    """``probe`` raises (or times out) while the database is unreachable."""

    probe: Probe
    max_seconds: float = 900.0
    probe_timeout: float = 5.0
    backoff: float = 1.0
    backoff_max: float = 30.0
    what: str = "PostgreSQL"

    async def reachable(self) -> bool:
        try:
            async with asyncio.timeout(self.probe_timeout):
                await self.probe()
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    async def waited_out(self) -> bool:
        """True when ``what`` was unreachable and is back (handle the message again);
        False when it answers now (the failure is the message's own) or stayed away longer
        than ``max_seconds``."""
        if await self.reachable():
            return False
        logger.warning(
            "%s unreachable; waiting for it (up to %.0fs) before handling the message again",
            self.what,
            self.max_seconds,
        )
        started = time.monotonic()
        for delay in backoff.delays(self.backoff, self.backoff_max):
            if time.monotonic() - started >= self.max_seconds:
                break
            await asyncio.sleep(delay)
            if await self.reachable():
                logger.info("%s is back after %.0fs", self.what, time.monotonic() - started)
                return True
        logger.error("%s still unreachable after %.0fs", self.what, self.max_seconds)
        return False
