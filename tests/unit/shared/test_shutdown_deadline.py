"""shared.shutdown: the deadline ends a process whatever its main thread is doing."""

from __future__ import annotations

import subprocess
import sys
import time


def _run(code: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


def test_the_deadline_exits_with_its_code_while_the_main_thread_is_stuck() -> None:
    done, seconds = _run(
        "import time; from shared import shutdown\n"
        "assert shutdown.arm(0.5, code=130, why='after Ctrl-C; exiting now')\n"
        "assert not shutdown.arm(0.1)  # only the first call arms\n"
        "time.sleep(30)"
    )
    assert done.returncode == 130 and seconds < 20
    assert "after Ctrl-C; exiting now" in done.stderr


def test_a_service_deadline_exits_zero() -> None:
    done, seconds = _run(
        "import time; from shared import shutdown\nshutdown.arm(0.5)\ntime.sleep(30)"
    )
    assert done.returncode == 0 and seconds < 20
    assert "unsettled messages are redelivered" in done.stderr
