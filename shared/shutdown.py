"""The last resort of a stopping service: exit 0 at a deadline, whatever is still running.

After SIGTERM a service stops consuming, gives its messages in flight their grace period,
then closes the broker connection and the database pool, each step bounded. What cannot be
bounded from the event loop (a handler's thread inside a C library, a library callback that
ignores cancellation, a connection that waits for a server that is gone) must still not keep
the process alive: :func:`arm` starts a daemon thread that ends the process with exit code 0
once the deadline has passed. Nothing it abandons was acknowledged, so RabbitMQ redelivers
it when the connection drops with the process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

# Seconds after the grace period for closing the broker connection and the pool: the
# process ends at most this long after its grace period.
CLOSE_SECONDS = 5.0

_armed = threading.Lock()


SERVICE_WHY = "after the stop signal; exiting now (unsettled messages are redelivered)"


def arm(seconds: float, *, code: int = 0, why: str = SERVICE_WHY) -> bool:
    """End the process (exit ``code``) in ``seconds`` unless it has ended by then.

    Only the first call arms the deadline; returns whether this call did.
    """
    if not _armed.acquire(blocking=False):
        return False
    timer = threading.Timer(seconds, _exit_now, args=(seconds, code, why))
    timer.daemon = True
    timer.name = "shutdown-deadline"
    timer.start()
    return True


def _exit_now(seconds: float, code: int, why: str) -> None:
    logger.warning("still running %.0fs %s", seconds, why)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
