"""Settling a delivery across a RabbitMQ outage (``shared/redelivery.py``), without a broker."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.redelivery import ATTEMPTS_HEADER, Delivery, attempts_spent


class Incoming:
    """A delivery whose channel is open or lost (then every settle raises, as aio-pika's)."""

    def __init__(self, *, lost: bool = False) -> None:
        self.lost = lost
        self.acked = 0

    async def ack(self) -> None:
        if self.lost:
            raise RuntimeError("channel closed")
        self.acked += 1


async def ack(incoming: Any) -> None:
    await incoming.ack()


async def test_a_lost_delivery_is_settled_through_its_redelivery() -> None:
    first, again = Incoming(lost=True), Incoming()
    delivery = Delivery(first)  # type: ignore[arg-type]

    async def redeliver() -> None:
        await asyncio.sleep(0.05)  # RabbitMQ back, the message delivered again
        assert delivery.take_over(again)  # type: ignore[arg-type]

    task = asyncio.create_task(redeliver())
    assert await delivery.settle(ack, "acknowledge", within=5)
    await task
    assert again.acked == 1 and delivery.outages == 1 and delivery.settled


async def test_no_redelivery_within_the_wait_leaves_the_message_to_rabbitmq() -> None:
    delivery = Delivery(Incoming(lost=True))  # type: ignore[arg-type]
    assert not await delivery.settle(ack, "acknowledge", within=0.1)
    assert not delivery.settled


async def test_a_settled_delivery_takes_nothing_over() -> None:
    """An ack lost with its connection after it was sent: the redelivery is handled anew,
    never left unsettled (it would hold the consumer's prefetch for good)."""
    delivery = Delivery(Incoming())  # type: ignore[arg-type]
    assert await delivery.settle(ack, "acknowledge", within=1)
    assert not delivery.take_over(Incoming())  # type: ignore[arg-type]


def test_attempts_carried_by_a_requeued_copy() -> None:
    assert attempts_spent(None) == 0
    assert attempts_spent({ATTEMPTS_HEADER: 2}) == 2
    assert attempts_spent({ATTEMPTS_HEADER: "junk"}) == 0
    assert attempts_spent({ATTEMPTS_HEADER: -3}) == 0
