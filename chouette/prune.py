"""``chouette prune [--apply] [--weights-older-than DAYS] [--json]``: retention.

A dry run by default: it prints what would go (``shared.retention``) and removes nothing;
``--apply`` removes it. Exit 0 either way, 1 when the database cannot be reached.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from chouette.connections import open_pool
from chouette.errors import OK, UsageError
from shared import retention

_WHAT = {
    "checkpoints": "models: checkpoints of trainings that ended",
    "weights": "models: weights of non-champions trained more than {days:g} days ago",
    "images": "images: in no dataset and no prediction",
}


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


async def run_prune(args: argparse.Namespace, settings: Any) -> int:
    days = settings.retention_weights_days
    if args.weights_older_than is not None:
        days = args.weights_older_than
    if not days >= 0:
        raise UsageError(f"--weights-older-than: must be 0 or more days, not {days}")
    async with open_pool(settings, writes=args.apply) as pool:
        if args.apply:
            result = await retention.apply(pool, weights_after_days=days)
        else:
            result = await retention.plan(pool, weights_after_days=days)
    if args.json:
        items = {i.kind: {"count": i.count, "bytes": i.nbytes} for i in result.items}
        print(json.dumps({"applied": bool(args.apply), "weights_older_than_days": days, **items}))
        return OK
    for item in result.items:
        what = _WHAT[item.kind].format(days=days)
        print(f"{item.kind:<12} {item.count:>6} {_mib(item.nbytes):>12}  {what}")
    total = _mib(sum(i.nbytes for i in result.items))
    if args.apply:
        print(f"removed {total}")
    else:
        print(f"dry run: nothing removed ({total} would be); `chouette prune --apply` removes it")
    return OK
