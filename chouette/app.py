"""Entry point: parse, dispatch, map outcomes to exit codes (0 ok, 1 failure, 2 bad input)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from chouette.parser import UsageError, build_parser

OK, FAILED, BAD_INPUT = 0, 1, 2


class CommandFailed(Exception):
    """A command that ran but did not succeed (exit 1, the message on stderr)."""


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
        if args.command == "worker":
            from chouette.worker import run_worker

            return run_worker(args.name, args.args)
        if args.command == "services":
            from chouette.services import run_services

            return run_services(args.action)
        if args.command == "demo":
            from chouette.demo import run_demo

            return run_demo(args)
        if args.command == "weights":
            from chouette.weights import run_weights

            return run_weights(args)
        return _run_async(args)
    except UsageError as exc:
        print(f"chouette: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except CommandFailed as exc:
        print(f"chouette: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130


def _run_async(args: object) -> int:
    import asyncio

    from chouette.commands import run_command

    take_ctrl_c()
    return asyncio.run(run_command(args))  # type: ignore[arg-type]


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
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
