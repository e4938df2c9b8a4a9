"""Running the CLI in-process against the test servers, and peeking at the broker."""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage

from chouette.app import run_command
from chouette.parser import build_parser
from shared.settings import Settings
from tests.plugins.servers import drain_queue


async def chouette(settings: Settings, *argv: str) -> int:
    """``chouette ARGV`` in this event loop (``main`` would start its own)."""
    return await run_command(build_parser().parse_args(list(argv)), settings=settings)


async def drain(settings: Settings, queue: str) -> list[AbstractIncomingMessage]:
    """Every message waiting in ``<namespace>.<queue>`` (acked: the queue ends empty)."""
    amqp_url = settings.amqp_url.get_secret_value()
    return await drain_queue(amqp_url, f"{settings.broker_namespace}.{queue}")
