"""A service's first statement: a SIGTERM during start-up ends the process cleanly.

Importing TensorFlow and connecting take seconds; until the consumer installs its own
handler (``Broker.run_until_signalled``), Python's default would kill the process with
-15. Nothing is in flight yet, so exiting with code 0 is right. This module imports
nothing heavy, so each ``__main__`` can install it before its other imports.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def exit_on_sigterm() -> Any:
    """SIGTERM raises ``SystemExit(0)`` from now on (main thread only); returns the previous
    handler, or None when not called from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)
