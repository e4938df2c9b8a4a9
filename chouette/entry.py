"""The ``chouette`` console script: parse first, then load the commands.

``chouette --help`` and a usage error answer from the parser alone, which imports neither
pydantic nor the drivers; the command table (``chouette.app``) loads them, a quarter of a
second on a quiet machine and more than a second on a busy one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from chouette.errors import BAD_INPUT, UsageError
from chouette.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
    except UsageError as exc:
        print(f"chouette: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    from chouette import app  # lazy: the commands import pydantic and the drivers

    return app.run_parsed(args)
