"""The training thread: a daemon thread of its own, so a stopping process never waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

TRAINING_THREAD = "chouette-training"


def in_training_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """``fn()`` in a daemon thread of its own; its result or error settles the future.

    Not ``asyncio.to_thread``: the default executor's threads are joined when the event
    loop closes, so a process stopping in the middle of a training step (seconds on a busy
    CPU) would not exit until the step ends. An abandoned training's message is unacked
    and will be redelivered: ``python -m services.trainer`` exits without waiting for it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def body() -> None:
        result, error = None, None
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=body, name=TRAINING_THREAD, daemon=True).start()
    return future


def training_in_progress() -> bool:
    """Whether a training thread is still running (e.g. abandoned mid-step at shutdown)."""
    return any(t.name == TRAINING_THREAD and t.is_alive() for t in threading.enumerate())
