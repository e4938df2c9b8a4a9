"""The commands that talk to Postgres and RabbitMQ: train, evaluate, status, watch, models,
migrate. The others live in modules of their own (``predict``, ``report``, ...);
``chouette.app`` dispatches to all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import uuid
from typing import Any

from chouette import queries, rabbit_users, render
from chouette.connections import CONNECT_TIMEOUT_S, open_listener, open_pool, open_publisher
from chouette.errors import FAILED, OK, CommandFailed, UsageError
from chouette.follow import Listener, follow, stop_on_signals, watch, with_reconnect
from chouette.submit import (
    Publisher,
    evaluation_request,
    kind_of,
    params_json,
    parse_model_id,
    trained_model,
    training_request,
)
from shared import db, shutdown
from shared.broker import declare_topology_as
from shared.messages import Message
from shared.request_state import Stage
from shared.settings import Settings, redact_url

# After Ctrl-C, `--wait` ends within this many seconds whatever its connections do.
CTRL_C_EXIT_SECONDS = 10.0

_ID_PREFIX = re.compile(r"[0-9a-fA-F-]{1,36}")


async def migrate_command(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations as the migration role and set every group role's grants
    (shared.privileges); print what it applied."""
    url = settings.database_url_for("migrate")
    try:
        applied = await asyncio.wait_for(db.migrate_at(url.get_secret_value(), grants=True), 300)
    except Exception as exc:
        raise CommandFailed(f"migrate at {redact_url(url)}: {exc}") from None
    for name in applied:
        print(f"applied {name}")
    print(f"schema up to date ({len(db.migration_files())} migrations); grants set")
    await declare_broker_topology(settings)
    print(f"exchanges and queues of {settings.broker_namespace!r} declared")
    if settings.rabbitmq_management_url:
        names = await provision_broker_users(settings)
        print(f"RabbitMQ users provisioned: {', '.join(names) or 'none (one user for all)'}")
    return OK


async def provision_broker_users(settings: Settings) -> list[str]:
    """Create the ``*_AMQP_URL`` users and their permissions through RabbitMQ's management
    API (``RABBITMQ_MANAGEMENT_URL``) as ``MIGRATE_AMQP_URL``'s user; return their names.
    Idempotent: a broker that boots with one administrator (compose's) gets the rest here."""
    try:
        users = rabbit_users.broker_users(settings)
        await rabbit_users.provision(
            settings.rabbitmq_management_url,
            settings.amqp_url_for("migrate").get_secret_value(),
            users,
            namespace=settings.broker_namespace,
        )
    except rabbit_users.ProvisionError as exc:
        raise CommandFailed(f"migrate: {exc}") from None
    return [user.name for user in users]


async def declare_broker_topology(settings: Settings) -> None:
    """Declare the pipeline's exchanges and queues as ``MIGRATE_AMQP_URL`` (else
    ``AMQP_URL``): users of least privilege may only use them."""
    url = settings.amqp_url_for("migrate").get_secret_value()
    try:
        await asyncio.wait_for(
            declare_topology_as(
                url,
                namespace=settings.broker_namespace,
                delivery_limit=settings.broker_delivery_limit,
            ),
            CONNECT_TIMEOUT_S,
        )
    except Exception as exc:
        raise CommandFailed(
            f"migrate: cannot declare the queues at {redact_url(url)}: {exc}"
        ) from None


# -- train / evaluate ---------------------------------------------------------------------


async def submit_command(
    args: argparse.Namespace, settings: Settings, publisher: Publisher | None = None
) -> int:
    """``train`` / ``evaluate``. ``publisher`` replaces the RabbitMQ connection (tests)."""
    message: Message
    if args.command == "train":
        message = training_request(args)  # bad input stops here: nothing opened yet
    else:
        evaluation_request(args)  # everything but the model's existence, before connecting
    async with open_pool(settings, writes=True) as pool:
        if args.command == "evaluate":
            message = evaluation_request(args, await _evaluable_model_tags(pool, args.model))
        async with contextlib.AsyncExitStack() as stack:
            listener = None
            if args.wait:  # subscribe before publishing: no notification can be missed
                listener = await stack.enter_async_context(open_listener(settings))
            # RabbitMQ only while publishing: following reads PostgreSQL alone, so a broker
            # outage while `--wait` follows neither stops it nor fills its terminal with
            # reconnection errors (the services publish what they must once it is back).
            async with contextlib.AsyncExitStack() as broker_stack:
                if publisher is None:
                    publisher = await broker_stack.enter_async_context(open_publisher(settings))
                await record_and_publish(pool, publisher, message)
                await note_missing_services(publisher, message)
            if listener is None:
                return await _print_submitted(pool, message.request_id, args.json)
            return await _wait(listener, message.request_id, args)


async def _evaluable_model_tags(pool: db.Pool, model_arg: str) -> tuple[str, ...]:
    row = await trained_model(pool, parse_model_id(model_arg))
    return tuple(row["class_names"])


async def record_and_publish(pool: db.Pool, publisher: Publisher, message: Message) -> None:
    await db.ensure_request(pool, message.request_id, kind_of(message), params_json(message))
    try:
        await publisher.publish(message)
    except Exception as exc:
        error = f"could not publish {type(message).__name__}: {exc}"
        await db.record_failure(
            pool, request_id=message.request_id, queue="cli", stage=Stage.QUEUED, error=error
        )
        raise CommandFailed(error) from None


# After following ends, how long reading the result may wait for PostgreSQL.
RECONNECT_WITHIN_S = 60.0

# The services a request goes through, named by the queue each one consumes.
ROUTES = {
    "training": ("fetcher", "trainer", "evaluator"),
    "evaluation": ("fetcher", "evaluator"),
}


async def note_missing_services(publisher: Publisher, message: Message) -> None:
    """Say on stderr which services the request needs that nothing runs yet: the request is
    safe in its queue, but a user waiting on it deserves to know why nothing moves."""
    try:
        consumers = await publisher.consumer_counts(ROUTES[kind_of(message)])
    except Exception:  # a hint, never a reason to fail a request already published
        return
    idle = [name for name, n in consumers.items() if n == 0]
    if idle:
        print(
            f"chouette: note: no {' / '.join(idle)} service is running; the request waits in"
            f" its queue until one starts (chouette worker {idle[0]})",
            file=sys.stderr,
        )


async def _print_submitted(pool: db.Pool, request_id: uuid.UUID, as_json: bool) -> int:
    if as_json:
        req = await queries.request(pool, request_id)
        assert req is not None
        print(render.dumps(render.result_json(req, None)))
    else:
        print(request_id)
    return OK


async def follow_request(
    listener: Listener, request_id: uuid.UUID, view: render.ProgressView, timeout_s: float | None
) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """Follow to the end (or ``timeout_s``): (request row, its evaluation, timed out)."""
    timed_out = False
    try:
        req = await follow(listener, request_id, view, timeout_s=timeout_s)
    except TimeoutError:
        timed_out = True
        found = await with_reconnect(
            listener, view, lambda con: queries.request(con, request_id), RECONNECT_WITHIN_S
        )
        assert found is not None
        req = found
    evaluation = await with_reconnect(
        listener, view, lambda con: queries.evaluation_for_request(con, req), RECONNECT_WITHIN_S
    )
    return req, evaluation, timed_out


async def _wait(listener: Listener, request_id: uuid.UUID, args: argparse.Namespace) -> int:
    if not args.json:
        print(request_id, flush=True)
    view = render.ProgressView(enabled=not args.json)
    try:
        req, ev, timed_out = await follow_request(listener, request_id, view, args.timeout)
    except asyncio.CancelledError:  # Ctrl-C: only the waiting stops, never the request
        print(
            f"\nchouette: stopped waiting; request {request_id} goes on"
            f" (chouette status {str(request_id)[:8]})",
            file=sys.stderr,
            flush=True,
        )
        # Closing the connections is bounded: a close that waits on a busy server (seen
        # under load: no exit within 60 s) must not keep the command alive.
        shutdown.arm(CTRL_C_EXIT_SECONDS, code=130, why="after Ctrl-C; exiting now")
        raise
    if args.json:
        print(render.dumps(render.result_json(req, ev)))
    else:
        print(render.request_text(req, ev))
    if timed_out:
        print(
            f"chouette: gave up waiting after {args.timeout:g}s; request {request_id} is still"
            f" {req['status']} ({req['stage']})",
            file=sys.stderr,
        )
        return FAILED
    if req["status"] != "succeeded":
        print(
            f"chouette: request {request_id} failed at {req['stage']}:"
            f" {render.printable(req['error'] or '')}",
            file=sys.stderr,
        )
        return FAILED
    return OK


# -- status / models / watch --------------------------------------------------------------


async def status_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.request_id is not None and not _ID_PREFIX.fullmatch(args.request_id):
        raise UsageError(f"REQUEST_ID: not a request id or id prefix: {args.request_id!r}")
    async with open_pool(settings) as pool:
        if args.request_id is None:
            rows = await queries.recent_requests(pool, args.limit)
            if args.json:
                print(render.dumps({"requests": rows}))
            elif rows:
                print(render.requests_table(rows))
            else:
                print("no requests yet (chouette train --help)")
            return OK
        matches = await queries.requests_by_prefix(pool, args.request_id)
        if not matches:
            raise UsageError(f"REQUEST_ID: no request matches {args.request_id!r}")
        if len(matches) > 1:
            raise UsageError(f"REQUEST_ID: {args.request_id!r} matches several requests")
        req = matches[0]
        ev = await queries.evaluation_for_request(pool, req)
        if args.json:
            print(render.dumps(render.result_json(req, ev)))
        else:
            print(render.request_text(req, ev))
        return OK


async def models_command(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        rows = await queries.registry(pool, args.limit)
    if args.json:
        print(render.dumps({"models": rows}))
    elif rows:
        print(render.registry_table(rows))
    else:
        print("no models yet (chouette train --help)")
    return OK


async def watch_command(args: argparse.Namespace, settings: Settings) -> int:
    stop = asyncio.Event()
    async with open_pool(settings) as pool, pool.acquire() as con:
        restore = stop_on_signals(stop)
        try:
            await watch(con, sys.stdout, stop=stop)
        finally:
            restore()
    return OK
