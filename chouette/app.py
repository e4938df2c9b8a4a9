"""Entry point: parse, dispatch through one table, map outcomes to exit codes (0 ok,
1 failure, 2 bad input).

Every command module is imported here, at the top: none of them imports TensorFlow,
matplotlib or Pillow when imported (those wait for the functions that use them, with a
``# lazy:`` reason), so ``chouette --help`` still answers at once (the drivers, pydantic
and the settings take about a quarter of a second).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable, Callable

from chouette import champion, commands, explain, export, predict, prune, report
from chouette.demo import run_demo
from chouette.errors import BAD_INPUT, FAILED, INTERRUPTED, CommandFailed, UsageError
from chouette.services import run_services
from chouette.submit import Publisher
from chouette.weights import run_weights
from chouette.worker import run_worker
from shared.settings import Settings

AsyncCommand = Callable[[argparse.Namespace, Settings], Awaitable[int]]

# Commands that run in an event loop of their own (``asyncio.run``), by name.
ASYNC_COMMANDS: dict[str, AsyncCommand] = {
    "train": commands.submit_command,
    "evaluate": commands.submit_command,
    "status": commands.status_command,
    "watch": commands.watch_command,
    "models": commands.models_command,
    "migrate": commands.migrate_command,
    "predict": predict.run_predict,
    "export": export.run_export,
    "explain": explain.run_explain,
    "report": report.run_report,
    "prune": prune.run_prune,
    "champion": champion.run_champion,
    "promote": champion.run_champion,
}

# Commands that start processes or servers, or fetch files: no event loop of their own
# (``demo`` starts one once the services are up).
SYNC_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "worker": lambda args: run_worker(args.name, args.args),
    "services": lambda args: run_services(args.action),
    "demo": run_demo,
    "weights": run_weights,
}


def run_parsed(args: argparse.Namespace) -> int:
    """Run the command ``args`` names (parsed already); map its outcome to an exit code."""
    try:
        sync = SYNC_COMMANDS.get(args.command)
        if sync is not None:
            return sync(args)
        take_ctrl_c()
        return asyncio.run(run_command(args))
    except UsageError as exc:
        print(f"chouette: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except CommandFailed as exc:
        print(f"chouette: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return INTERRUPTED


async def run_command(
    args: argparse.Namespace,
    *,
    settings: Settings | None = None,
    publisher: Publisher | None = None,
) -> int:
    """Run one command of ``ASYNC_COMMANDS`` in the running loop. ``publisher`` replaces
    the RabbitMQ connection of ``train`` and ``evaluate`` (tests)."""
    settings = settings or Settings()
    if publisher is not None and args.command in ("train", "evaluate"):
        return await commands.submit_command(args, settings, publisher)
    return await ASYNC_COMMANDS[args.command](args, settings)


def take_ctrl_c() -> None:
    """Make SIGINT interrupt the command even when it was started with SIGINT ignored.

    A process inherits an ignored SIGINT: a shell without job control ignores it for every
    background job (``cmd &`` in a script, CI runners, ``make test`` started that way), and
    Python then leaves it ignored. ``asyncio.run`` only turns SIGINT into a cancellation of
    the command when Python's own handler is installed, so ``chouette train --wait`` went on
    waiting for good after Ctrl-C (``kill -INT``), and the 10 s deadline of ``--wait`` never
    armed: the full-suite hang of the Ctrl-C test. ``chouette watch`` already took SIGINT
    whatever its inheritance (``loop.add_signal_handler``); every async command now does.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
