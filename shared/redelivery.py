"""Riding out a RabbitMQ outage without spending a delivery attempt.

When RabbitMQ goes away in the middle of a handler, the handler has no reason to stop: it
needs PostgreSQL and the image API, not the broker. But its delivery is lost with the
channel: the ack cannot be sent, and once RabbitMQ is back it delivers the message again
(a quorum queue counts that as a delivery: ``x-delivery-count`` grows by one per outage).
Before, the result could not be published either, the handler's work counted as a failed
attempt and was redone from the start on the redelivery.

Now the broker layer keeps one :class:`Delivery` per message id while it handles it:

- a redelivery of a message this process is still handling is *taken over* by the handling
  in progress (no second handling): the handling settles the newest delivery when it ends;
- results are published once RabbitMQ is back (:func:`publish_when_back` in the broker);
- settling (ack, nack, reject) that fails because the channel is gone waits for the
  redelivery and settles that one instead;
- the attempt number is the one of the first delivery seen here, so an outage never makes
  a handler's failure count twice; and requeueing a message that outages made RabbitMQ
  count too often republishes it with a fresh count, carrying the attempts really spent in
  a header (:data:`ATTEMPTS_HEADER`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aio_pika.abc import AbstractIncomingMessage

logger = logging.getLogger(__name__)

# Failed attempts a message had spent before it was republished with a fresh delivery count.
ATTEMPTS_HEADER = "x-chouette-attempts"

Settle = Callable[[AbstractIncomingMessage], Awaitable[None]]


@dataclass
class Delivery:
    """The deliveries of one message while this process handles it."""

    incoming: AbstractIncomingMessage
    # Deliveries that replaced an earlier one lost with its channel (broker outages).
    outages: int = 0
    # Settled: a redelivery now (an ack lost with its connection) is handled anew.
    settled: bool = False
    _newer: asyncio.Event = field(default_factory=asyncio.Event)

    def take_over(self, incoming: AbstractIncomingMessage) -> bool:
        """``incoming`` is a redelivery of this message: settle it, not the lost one.
        False when this delivery is already settled (``incoming`` must be handled)."""
        if self.settled:
            return False
        self.incoming = incoming
        self.outages += 1
        self._newer.set()
        return True

    async def settle(self, action: Settle, what: str, within: float) -> bool:
        """Apply ``action`` (ack, nack, reject) to the newest delivery; when the channel is
        gone, wait up to ``within`` seconds for the redelivery and settle that one instead.
        False when no redelivery came (RabbitMQ gave it to another consumer, or is away
        for longer): the message stays with RabbitMQ, which delivers it again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            incoming = self.incoming
            self._newer.clear()
            try:
                await action(incoming)
                self.settled = True
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the channel of this delivery is closed
                if self.incoming is not incoming:
                    continue  # a redelivery came in meanwhile
                left = deadline - loop.time()
                logger.warning(
                    "could not %s the message (%s: %s): RabbitMQ unreachable; waiting up to"
                    " %.0fs for it to deliver the message again",
                    what,
                    type(exc).__name__,
                    exc,
                    max(left, 0.0),
                )
                if left <= 0:
                    return False
                try:
                    async with asyncio.timeout(left):
                        await self._newer.wait()
                except TimeoutError:
                    logger.warning("no redelivery within %.0fs; RabbitMQ keeps the message", within)
                    return False


def attempts_spent(headers: Mapping[str, object] | None) -> int:
    """Failed attempts carried by a republished message (0 for an original)."""
    value = (headers or {}).get(ATTEMPTS_HEADER, 0)
    try:
        return max(0, int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0
