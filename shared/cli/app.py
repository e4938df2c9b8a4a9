"""Entry point: parse, dispatch, map outcomes to exit codes (0 ok, 1 failure, 2 bad input)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from shared.cli.parser import UsageError, build_parser

OK, FAILED, BAD_INPUT = 0, 1, 2


class CommandFailed(Exception):
    """A command that ran but did not succeed (exit 1, the message on stderr)."""


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
        if args.command == "worker":
            from shared.cli.worker import run_worker

            return run_worker(args.name, args.args)
        if args.command == "services":
            from shared.cli.services import run_services

            return run_services(args.action)
        if args.command == "demo":
            from shared.cli.demo import run_demo

            return run_demo(args)
        if args.command == "weights":
            from shared.cli.weights import run_weights

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

    from shared.cli.commands import run_command

    return asyncio.run(run_command(args))  # type: ignore[arg-type]
