"""RabbitMQ through aio-pika: topology, confirmed publishing, and the one consuming idiom.

Topology (declared idempotently by every process that connects with ``declare``, the
default; else by ``chouette migrate`` alone, users of least privilege only using it)::

    exchange <ns> (topic)
      training.requested, evaluation.requested  ──▶ <ns>.fetcher
      dataset.ready.training                    ──▶ <ns>.trainer
      model.ready, dataset.ready.evaluation     ──▶ <ns>.evaluator
      model.evaluated, request.failed           ──▶ <ns>.events   (bounded, for watchers)
    exchange <ns>.dlx (direct)
      <ns>.<queue>                              ──▶ <ns>.<queue>.dead

All queues are durable quorum queues with ``x-delivery-limit``; messages are persistent,
published with publisher confirms and ``mandatory`` (an unroutable message is an error).

:meth:`Broker.consume` is the only place that acknowledges. A handler takes a message and
returns the next message(s); they are published (confirmed) and only then is the incoming
message acked, after the handler's own database commit:

- handler returns            → publish results, ack
- ``PermanentError``, bad body → failure recorded (Postgres + ``RequestFailed``), reject → DLQ
- ``RetryableError``/other   → requeue after a short backoff; at the delivery limit treated
                                as permanent
- never settled (a consumer that crashes each time) → RabbitMQ dead-letters it at the
  delivery limit; :meth:`Broker.consume_dead_letters` records that failure
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from yarl import URL

from shared import backoff, dead_letters, shutdown
from shared.errors import InvalidMessage, PermanentError
from shared.logs import request_context
from shared.messages import Message, RequestFailed, parse_message, shorten
from shared.outages import OutageWait
from shared.redelivery import ATTEMPTS_HEADER, Delivery, attempts_spent
from shared.request_state import Stage

logger = logging.getLogger(__name__)

FETCHER, TRAINER, EVALUATOR, EVENTS = "fetcher", "trainer", "evaluator", "events"

BINDINGS: dict[str, tuple[str, ...]] = {
    FETCHER: ("training.requested", "evaluation.requested"),
    TRAINER: ("dataset.ready.training",),
    EVALUATOR: ("model.ready", "dataset.ready.evaluation"),
    EVENTS: ("model.evaluated", "request.failed"),
}
# The stage a request is in while a queue's consumer works on it (for failure rows).
STAGES = {
    FETCHER: Stage.FETCHING,
    TRAINER: Stage.TRAINING,
    EVALUATOR: Stage.EVALUATING,
    EVENTS: Stage.DONE,
}

# A delivery handled again after this many outages is requeued (a database that flaps).
MAX_OUTAGES_PER_DELIVERY = 10
# Seconds a stopping consumer waits for RabbitMQ to confirm its cancellation.
CANCEL_SECONDS = 1.0
# Failure texts (rows, events, log lines) are cut to this many characters.
MAX_ERROR_CHARS = 2_000

Result = Message | Sequence[Message] | None
Handler = Callable[[Any], Awaitable[Result]]


class FailureSink(Protocol):
    async def __call__(
        self,
        *,
        request_id: uuid.UUID | None,
        queue: str,
        stage: str,
        error: str,
        body: bytes | None,
    ) -> None: ...


@dataclass
class Broker:
    """One robust connection per process; one channel for publishing, one per consumer."""

    url: str = field(repr=False)  # holds the password
    namespace: str = "chouette"
    delivery_limit: int = 5
    heartbeat: int = 30
    # Requeue backoff: base * 2**(attempt-1) seconds, capped.
    retry_backoff: float = 0.5
    retry_backoff_max: float = 10.0
    # Bodies longer than this are dead-lettered unread (messages carry ids and parameters).
    max_body_bytes: int = 1024 * 1024
    # Declare the exchanges and queues on connecting (AUTO_MIGRATE). A user of least
    # privilege may not: ``chouette migrate`` declares them, and this only uses them.
    declare: bool = True
    # While RabbitMQ is unreachable, a handler's results wait this long to be published
    # (and its delivery to be settled) before the handling is abandoned to a redelivery.
    outage_wait_seconds: float = 900.0

    connection: AbstractRobustConnection | None = field(default=None, init=False)
    _channel: AbstractChannel | None = field(default=None, init=False)
    _exchange: AbstractExchange | None = field(default=None, init=False)
    _consumers: list[tuple[AbstractQueue, str]] = field(default_factory=list, init=False)
    _inflight: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    # The message ids this process is handling (a redelivery after an outage joins them).
    _deliveries: dict[str, Delivery] = field(default_factory=dict, init=False)
    stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # Set by the service: a handler failing while the database is unreachable waits for it
    # and handles the same delivery again, instead of spending a delivery attempt.
    outage: OutageWait | None = field(default=None, init=False)

    def queue_name(self, queue: str) -> str:
        return f"{self.namespace}.{queue}"

    async def connect(self) -> Broker:
        # aio-pika ignores keyword options when given a URL: the heartbeat goes in the query.
        url = URL(self.url)
        if "heartbeat" not in url.query:
            url = url.update_query(heartbeat=self.heartbeat)
        # Keep the connection object from the start: cancelled (SIGTERM while starting) in
        # the middle of connecting, a robust connection would otherwise go on reconnecting
        # in the background, with nothing left to close it, and keep the process alive.
        created: list[aio_pika.RobustConnection] = []

        def connection_class(*args: Any, **kwargs: Any) -> aio_pika.RobustConnection:
            created.append(aio_pika.RobustConnection(*args, **kwargs))
            return created[-1]

        try:
            self.connection = await aio_pika.connect_robust(
                url,
                client_properties={"connection_name": "chouette"},
                connection_class=connection_class,  # type: ignore[arg-type]
            )
        except BaseException:
            for connection in created:
                await connection.close()
            raise
        self._channel = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        if self.declare:
            self._exchange = await declare_topology(
                self._channel, self.namespace, self.delivery_limit
            )
        else:
            self._exchange = await self._channel.get_exchange(self.namespace, ensure=False)
        return self

    async def close(self, within: float | None = None) -> None:
        """Close the connection; with ``within``, give up waiting after that many seconds
        (RabbitMQ unreachable: a robust connection may wait for a server that is gone)."""
        if self.connection is None or self.connection.is_closed:
            return
        try:
            async with asyncio.timeout(within):
                await self.connection.close()
        except TimeoutError:
            logger.warning("the broker connection did not close in %.0fs; abandoned", within)

    async def __aenter__(self) -> Broker:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, message: Message) -> None:
        """Publish persistently and wait for the broker's confirm (raises if unroutable)."""
        assert self._exchange is not None, "connect() first"
        await self._exchange.publish(
            aio_pika.Message(
                message.to_json(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(message.message_id),
                correlation_id=str(message.request_id),
                type=type(message).__name__,
            ),
            routing_key=message.routing_key,
            mandatory=True,
        )
        logger.debug("published %s %s", type(message).__name__, message.routing_key)

    async def publish_when_back(self, message: Message) -> None:
        """Publish; while RabbitMQ is unreachable, retry until it is back (at most
        ``outage_wait_seconds``). A refusal from a reachable broker (unroutable, nacked)
        raises at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outage_wait_seconds
        delay, noted = 0.5, False
        while True:
            try:
                async with asyncio.timeout(max(1.0, min(30.0, deadline - loop.time()))):
                    await self.publish(message)
                if noted:
                    logger.info("RabbitMQ is back; published %s", type(message).__name__)
                return
            except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError):
                raise
            except Exception as exc:
                if loop.time() >= deadline:
                    raise
                if not noted:
                    logger.warning(
                        "RabbitMQ unreachable (%s: %s); publishing %s once it is back (up to"
                        " %.0fs)",
                        type(exc).__name__,
                        exc,
                        type(message).__name__,
                        self.outage_wait_seconds,
                    )
                    noted = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _requeue_copy(
        self, incoming: AbstractIncomingMessage, queue: str, spent: int
    ) -> None:
        """Put a copy of ``incoming`` back at the tail of ``queue`` with a fresh delivery
        count, carrying the ``spent`` failed attempts in a header (outages made RabbitMQ
        count more deliveries than there were attempts)."""
        assert self._exchange is not None, "connect() first"
        headers = {k: v for k, v in (incoming.headers or {}).items() if not k.startswith("x-")}
        headers[ATTEMPTS_HEADER] = spent
        # Through the pipeline's exchange with the message's own routing key (bound to this
        # queue alone): a service's RabbitMQ user may publish there, not to the default
        # exchange (least privilege).
        if incoming.routing_key not in BINDINGS[queue]:
            raise RuntimeError(f"routing key {incoming.routing_key!r} does not lead to {queue}")
        await self._exchange.publish(
            aio_pika.Message(
                incoming.body,
                headers=headers,
                content_type=incoming.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=incoming.message_id,
                correlation_id=incoming.correlation_id,
                type=incoming.type,
            ),
            routing_key=incoming.routing_key,
            mandatory=True,
        )

    async def consumer_counts(self, queues: Sequence[str]) -> dict[str, int]:
        """How many consumers each work queue has now (one passive declare per queue)."""
        assert self.connection is not None, "connect() first"
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            counts = {}
            for queue in queues:
                declared = await channel.declare_queue(self.queue_name(queue), passive=True)
                counts[queue] = declared.declaration_result.consumer_count or 0
            return counts
        finally:
            await channel.close()

    # -- consuming --------------------------------------------------------------------------

    async def consume(
        self,
        queue: str,
        accepts: tuple[type[Message], ...],
        handler: Handler,
        *,
        on_failure: FailureSink,
        prefetch: int = 1,
    ) -> None:
        """Start consuming ``queue``; ``handler`` gets messages of the ``accepts`` types."""
        assert self.connection is not None, "connect() first"
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        amqp_queue = await channel.get_queue(self.queue_name(queue), ensure=True)
        stage = STAGES[queue]

        async def handle(incoming: AbstractIncomingMessage) -> None:
            try:
                await self._handle(incoming, queue, stage, accepts, handler, on_failure)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Settling failed (connection lost, database down while recording a
                # failure): the unacked message is redelivered once the channel is back.
                logger.exception("could not settle a message on %s; it will be redelivered", queue)

        tag = await amqp_queue.consume(functools.partial(self._detached, handle))
        self._consumers.append((amqp_queue, tag))
        logger.info("consuming %s (prefetch %d)", self.queue_name(queue), prefetch)

    async def _detached(
        self,
        handle: Callable[[AbstractIncomingMessage], Coroutine[Any, Any, None]],
        incoming: AbstractIncomingMessage,
    ) -> None:
        """Run ``handle`` in a task of its own, which only :meth:`stop_consuming` cancels.

        aio-pika cancels its consumer callbacks when their channel closes: a RabbitMQ
        outage would cancel every handler in the middle of its work (a fetch, a training),
        though the work needs PostgreSQL, not the broker. Shielded, the work goes on, and
        its redelivery joins it (:mod:`shared.redelivery`)."""
        task = asyncio.create_task(handle(incoming))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        await asyncio.shield(task)

    async def _handle(
        self,
        incoming: AbstractIncomingMessage,
        queue: str,
        stage: str,
        accepts: tuple[type[Message], ...],
        handler: Handler,
        on_failure: FailureSink,
    ) -> None:
        request_id = _uuid_or_none(incoming.correlation_id)
        with request_context(request_id or "-"):
            try:
                message = read_body(incoming.body, accepts, queue, self.max_body_bytes)
            except InvalidMessage as exc:
                logger.error("rejecting invalid message: %s", exc)
                await self._fail(Delivery(incoming), queue, stage, str(exc), request_id, on_failure)
                return

            request_id = message.request_id
            key = incoming.message_id
            with request_context(request_id):
                running = self._deliveries.get(key) if key else None
                if running is not None and running.take_over(incoming):
                    # The channel of the first delivery was lost (a RabbitMQ outage) while
                    # this process went on handling it: no second handling, no attempt spent.
                    logger.info(
                        "%s delivered again while still handled here (RabbitMQ outage);"
                        " the handling in progress settles it",
                        type(message).__name__,
                    )
                    return
                delivery = Delivery(incoming)
                if key:
                    self._deliveries[key] = delivery
                try:
                    await self._handle_delivery(
                        delivery, message, queue, stage, handler, on_failure
                    )
                finally:
                    if key and self._deliveries.get(key) is delivery:
                        del self._deliveries[key]

    async def _handle_delivery(
        self,
        delivery: Delivery,
        message: Message,
        queue: str,
        stage: str,
        handler: Handler,
        on_failure: FailureSink,
    ) -> None:
        incoming = delivery.incoming
        attempt = attempts_spent(incoming.headers) + _delivery_count(incoming) + 1
        logger.info("handling %s (delivery %d)", type(message).__name__, attempt)
        for _ in range(MAX_OUTAGES_PER_DELIVERY):
            if not await self._handle_once(
                delivery, message, attempt, queue, stage, handler, on_failure
            ):
                return
            logger.info("handling %s again (same delivery)", type(message).__name__)
        logger.error("too many outages during one delivery; requeueing it")
        await self._requeue(delivery, queue, attempt)

    async def _handle_once(
        self,
        delivery: Delivery,
        message: Message,
        attempt: int,
        queue: str,
        stage: str,
        handler: Handler,
        on_failure: FailureSink,
    ) -> bool:
        """Handle and settle the delivery; True when it must be handled again (the
        database was unreachable and is back: the message did not fail)."""
        request_id = message.request_id
        try:
            result = await handler(message)
            for out in _as_list(result):
                await self.publish_when_back(out)
            await delivery.settle(_ack, "acknowledge", self.outage_wait_seconds)
        except PermanentError as exc:
            logger.error("permanent failure: %s", exc)
            await self._fail(delivery, queue, stage, str(exc), request_id, on_failure)
        except asyncio.CancelledError:
            # Stopping: leave the message unacked; it is redelivered to another consumer.
            logger.warning("delivery cancelled before it was settled; it will be redelivered")
            raise
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if self.outage is not None and await self.outage.waited_out():
                logger.warning("failed while %s was unreachable: %s", self.outage.what, text)
                return True
            if attempt >= self.delivery_limit:
                logger.exception("failed %d times, giving up", attempt)
                error = f"gave up after {attempt} attempts: {text}"
                await self._fail(delivery, queue, stage, error, request_id, on_failure)
                return False
            delay = backoff.delay(attempt - 1, self.retry_backoff, self.retry_backoff_max)
            logger.warning("attempt %d failed (%s); requeue in %.1fs", attempt, text, delay)
            await asyncio.sleep(delay)
            await self._requeue(delivery, queue, attempt)
        return False

    async def _requeue(self, delivery: Delivery, queue: str, attempt: int) -> None:
        """Give the message back after failed attempt number ``attempt``.

        A plain nack, unless outages made RabbitMQ count deliveries that were no attempts:
        then a copy with a fresh count and the attempts spent goes to the tail of the queue
        and the delivery is acked, so outages never bring a message closer to the
        dead-letter queue."""
        incoming = delivery.incoming
        if attempts_spent(incoming.headers) + _delivery_count(incoming) + 1 <= attempt:
            await delivery.settle(_nack_requeue, "requeue", self.outage_wait_seconds)
            return
        logger.info("requeueing a copy: %d delivery(ies) were RabbitMQ outages", delivery.outages)
        try:
            await self._requeue_copy(incoming, queue, attempt)
        except Exception:
            logger.exception("could not requeue a copy; requeueing the delivery itself")
            await delivery.settle(_nack_requeue, "requeue", self.outage_wait_seconds)
            return
        # The copy (same message id) is a new message, handled anew even by this process.
        delivery.settled = True
        # Not acked (connection lost meanwhile): the original comes back too, a duplicate
        # that idempotent handlers absorb.
        await Delivery(incoming).settle(_ack, "acknowledge", 0)

    async def _fail(
        self,
        delivery: Delivery,
        queue: str,
        stage: str,
        error: str,
        request_id: uuid.UUID | None,
        on_failure: FailureSink,
    ) -> None:
        """Record the failure, tell watchers, then dead-letter the message."""
        error = shorten(error, MAX_ERROR_CHARS)
        incoming = delivery.incoming
        if not await self._record(on_failure, request_id, queue, stage, error, incoming.body):
            # Without the failure row the user would never learn why: try again later.
            # RabbitMQ's own x-delivery-limit still bounds the attempts (and the dead
            # letter is recorded by the dead-letter consumer).
            logger.error("could not record the failure; requeueing the message")
            await asyncio.sleep(self.retry_backoff_max)
            await delivery.settle(_nack_requeue, "requeue", self.outage_wait_seconds)
            return
        if request_id is not None:
            try:
                await self.publish_when_back(
                    RequestFailed(request_id=request_id, stage=stage, error=error)
                )
            except Exception:
                logger.warning("could not publish RequestFailed; the failure row is written")
        await delivery.settle(_reject, "dead-letter", self.outage_wait_seconds)

    async def _record(
        self,
        on_failure: FailureSink,
        request_id: uuid.UUID | None,
        queue: str,
        stage: str,
        error: str,
        body: bytes,
    ) -> bool:
        """Write the failure row, waiting out a database outage; False if it could not."""
        for _ in range(MAX_OUTAGES_PER_DELIVERY):
            try:
                await on_failure(
                    request_id=request_id, queue=queue, stage=stage, error=error, body=body
                )
                return True
            except Exception:
                logger.exception("could not record the failure")
                if self.outage is None or not await self.outage.waited_out():
                    return False
        return False

    async def consume_dead_letters(self, queue: str, *, on_failure: FailureSink) -> None:
        """Consume ``<queue>.dead``: what RabbitMQ dead-lettered on its own (the delivery
        limit reached by a consumer that crashed each time) becomes a failure row, the
        request ``failed`` and a ``RequestFailed``; what this layer rejected after recording
        its failure is only acknowledged (``shared.dead_letters``)."""
        assert self.connection is not None, "connect() first"
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=1)
        dead = await channel.get_queue(f"{self.queue_name(queue)}.dead", ensure=True)
        stage = STAGES[queue]

        async def handle(incoming: AbstractIncomingMessage) -> None:
            try:
                await self._settle_dead_letter(incoming, queue, stage, on_failure)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("could not settle a dead letter of %s; it stays queued", queue)

        tag = await dead.consume(functools.partial(self._detached, handle))
        self._consumers.append((dead, tag))

    async def _settle_dead_letter(
        self, incoming: AbstractIncomingMessage, queue: str, stage: str, on_failure: FailureSink
    ) -> None:
        letter = dead_letters.read(
            incoming.headers or {}, incoming.correlation_id, incoming.body, self.max_body_bytes
        )
        with request_context(letter.request_id or "-"):
            if letter.recorded:
                await incoming.ack()
                return
            error = letter.error(queue, self.delivery_limit)
            logger.error("%s", error)
            if not await self._record(
                on_failure, letter.request_id, queue, stage, error, incoming.body
            ):
                # Dead-letter queues have no delivery limit: try again later.
                logger.error("could not record a dead letter; retrying")
                await asyncio.sleep(self.retry_backoff_max)
                await incoming.nack(requeue=True)
                return
            if letter.request_id is not None:
                try:
                    await self.publish(
                        RequestFailed(request_id=letter.request_id, stage=stage, error=error)
                    )
                except Exception:
                    logger.warning("could not publish RequestFailed; the failure row is written")
            await incoming.ack()

    # -- stopping ---------------------------------------------------------------------------

    async def stop_consuming(self, grace: float = 10.0) -> None:
        """Cancel consumers, let in-flight messages finish for ``grace`` s, then abandon them."""
        self.stopping.set()
        # Bounded: with RabbitMQ unreachable a robust channel would wait for it to come back.
        # A consumer not cancelled gets no more than its prefetch, and the connection closes.
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(CANCEL_SECONDS):
                for queue, tag in self._consumers:
                    with contextlib.suppress(Exception):
                        await queue.cancel(tag)
        self._consumers.clear()
        pending = set(self._inflight)
        if pending:
            logger.info("waiting up to %.0fs for %d message(s) in flight", grace, len(pending))
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=2)

    async def run_until_signalled(self, grace: float = 10.0) -> None:
        """Block until SIGTERM/SIGINT, then stop consuming cleanly."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            logger.info("signal received, stopping")
            # Whatever the servers and the handlers do now, the process ends in time.
            shutdown.arm(grace + shutdown.CLOSE_SECONDS)
            await self.stop_consuming(grace)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def permissions(process: str, namespace: str) -> tuple[str, str, str]:
    """RabbitMQ's (configure, write, read) regular expressions for ``process``'s user.

    A service may publish to the pipeline's exchange and consume its own queue and that
    queue's dead letters, nothing else; the CLI (``cli``) may only publish. None may
    declare, bind or delete anything: ``chouette migrate`` declares the topology as the
    administrator (dead-lettering is the broker's own doing and needs no permission).
    ``namespace`` is a regular expression (``re.escape(BROKER_NAMESPACE)``, or a pattern
    for the test servers' many namespaces).
    """
    write = f"^{namespace}$"
    if process == "cli":
        return "^$", write, "^$"
    if process not in (FETCHER, TRAINER, EVALUATOR):
        raise ValueError(f"no RabbitMQ permissions for {process!r}")
    return "^$", write, f"^{namespace}\\.{process}(\\.dead)?$"


async def declare_topology(
    channel: AbstractChannel, namespace: str, delivery_limit: int
) -> AbstractExchange:
    """Declare exchanges, work queues and their dead-letter queues (idempotent)."""
    exchange = await channel.declare_exchange(namespace, aio_pika.ExchangeType.TOPIC, durable=True)
    dlx = await channel.declare_exchange(
        f"{namespace}.dlx", aio_pika.ExchangeType.DIRECT, durable=True
    )
    for queue, keys in BINDINGS.items():
        name = f"{namespace}.{queue}"
        dead = await channel.declare_queue(
            f"{name}.dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(dlx, routing_key=name)
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if queue == EVENTS:  # watchers peek at it; keep only the latest events
            arguments.update({"x-max-length": 10_000, "x-overflow": "drop-head"})
        else:
            arguments.update(
                {
                    "x-delivery-limit": delivery_limit,
                    "x-dead-letter-exchange": f"{namespace}.dlx",
                    "x-dead-letter-routing-key": name,
                }
            )
        work = await channel.declare_queue(name, durable=True, arguments=arguments)
        for key in keys:
            await work.bind(exchange, routing_key=key)
    return exchange


def read_body(
    body: bytes, accepts: tuple[type[Message], ...], queue: str, max_bytes: int
) -> Message:
    """The message in ``body``, or :class:`InvalidMessage` whatever is wrong with it.

    A body over ``max_bytes`` is refused unread; any other exception while parsing or
    validating (there should be none) is turned into ``InvalidMessage`` too, so that no
    body can leave a delivery unsettled and stall the consumer.
    """
    if len(body) > max_bytes:
        raise InvalidMessage(f"body of {len(body)} bytes is over the limit of {max_bytes} bytes")
    try:
        message = parse_message(body)
    except InvalidMessage:
        raise
    except Exception as exc:  # a parser bug must not stall the queue
        raise InvalidMessage(f"body could not be parsed: {shorten(repr(exc))}") from exc
    if not isinstance(message, accepts):
        names = ", ".join(t.__name__ for t in accepts)
        raise InvalidMessage(f"queue {queue} accepts {names}, got {type(message).__name__}")
    return message


def _delivery_count(incoming: AbstractIncomingMessage) -> int:
    value = (incoming.headers or {}).get("x-delivery-count", 0)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


async def _ack(incoming: AbstractIncomingMessage) -> None:
    await incoming.ack()


async def _nack_requeue(incoming: AbstractIncomingMessage) -> None:
    await incoming.nack(requeue=True)


async def _reject(incoming: AbstractIncomingMessage) -> None:
    await incoming.reject(requeue=False)


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _as_list(result: Result) -> list[Message]:
    if result is None:
        return []
    if isinstance(result, Message):
        return [result]
    return list(result)


async def declare_topology_as(url: str, *, namespace: str, delivery_limit: int) -> None:
    """Connect as ``url``'s user, declare the pipeline's exchanges and queues, disconnect:
    what ``chouette migrate`` and the local servers' start do, so that users of least
    privilege need only use them."""
    broker = Broker(url, namespace=namespace, delivery_limit=delivery_limit)
    await broker.connect()
    await broker.close(within=5)
