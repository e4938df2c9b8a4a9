"""``chouette worker NAME``: run ``services.NAME`` by module name.

The module is found at run time (``runpy``), so the command line imports no service.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

from chouette.parser import WORKERS


def run_worker(name: str, args: Sequence[str] = ()) -> int:
    assert name in WORKERS, name
    module = f"services.{name}"
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
