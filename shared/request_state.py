"""A request's status, stage and progress: the values defined once, for every process.

``training_requests`` stores them (``status``, ``stage``, ``progress`` text for people
reading the table, ``progress_done``/``progress_total`` as numbers for programs); the
services write them through ``shared.db.set_stage``, the CLI and the API read them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Status(enum.StrEnum):
    """Where a request is in its life (the table's CHECK constraint lists the same)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINAL: Final = frozenset({Status.SUCCEEDED, Status.FAILED})


class Stage(enum.StrEnum):
    """Which part of the pipeline has the request (a failure keeps the stage it failed in)."""

    QUEUED = "queued"
    FETCHING = "fetching"
    TRAINING = "training"
    EVALUATING = "evaluating"
    DONE = "done"


@dataclass(frozen=True)
class Progress:
    """What a stage has done: ``label`` alone (``"loading model"``) or ``done`` of ``total``."""

    label: str
    done: int | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        if (self.done is None) != (self.total is None):
            raise ValueError("progress needs both done and total, or neither")
        if self.done is not None and not 0 <= self.done <= (self.total or 0):
            raise ValueError(f"progress {self.done}/{self.total} is out of range")

    @property
    def text(self) -> str:
        """As stored in ``progress`` and printed: ``"fetching 12/50"``."""
        if self.done is None:
            return self.label
        return f"{self.label} {self.done}/{self.total}"

    @property
    def fraction(self) -> tuple[int, int] | None:
        return None if self.done is None or self.total is None else (self.done, self.total)
