"""Running the CLI in-process against the test servers, and peeking at the broker."""

from __future__ import annotations

import aio_pika

from chouette.app import run_command
from chouette.parser import build_parser
from shared.settings import Settings


async def chouette(settings: Settings, *argv: str) -> int:
    """``chouette ARGV`` in this event loop (``main`` would start its own)."""
    return await run_command(build_parser().parse_args(list(argv)), settings=settings)


async def drain(settings: Settings, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message waiting in ``<namespace>.<queue>`` (acked: the queue ends empty)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    try:
        channel = await connection.channel()
        amqp_queue = await channel.get_queue(f"{settings.broker_namespace}.{queue}", ensure=True)
        messages = []
        while (message := await amqp_queue.get(fail=False, no_ack=True)) is not None:
            messages.append(message)
        return messages
    finally:
        await connection.close()
