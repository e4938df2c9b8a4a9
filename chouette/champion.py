"""``chouette champion [--reference START END | --no-reference]`` and ``chouette promote MODEL``.

The rule itself (and its SQL) is ``shared.champions``; this module parses, calls it and
prints the result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from chouette import render
from chouette.connections import open_pool
from chouette.errors import OK, CommandFailed, UsageError
from chouette.submit import parse_model_id
from shared import champions
from shared.settings import Settings


def parse_range(values: list[str]) -> tuple[dt.date, dt.date]:
    try:
        start, end = (dt.date.fromisoformat(v) for v in values)
    except ValueError as exc:
        raise UsageError(f"--reference: expected two YYYY-MM-DD dates ({exc})") from None
    if start > end:
        raise UsageError(f"--reference: start {start} is after end {end}")
    return start, end


async def run_champion(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "promote":
        model_id = parse_model_id(args.model)
        async with open_pool(settings, writes=True) as pool:
            try:
                change = await champions.promote(pool, model_id)
            except champions.NotPromotable as exc:
                raise CommandFailed(str(exc)) from None
            state = await champions.board(pool)
        _print([change], state, args.json)
        return OK
    reference = None if args.reference is None else parse_range(args.reference)
    writes = reference is not None or bool(args.no_reference)
    async with open_pool(settings, writes=writes) as pool:
        changes: list[champions.Change] = []
        if reference is not None:
            changes = await champions.pin_reference(pool, *reference)
        elif args.no_reference:
            await champions.unpin_reference(pool)
        state = await champions.board(pool)
    _print(changes, state, args.json)
    if reference is not None and not changes and not _chosen_on_reference(state):
        print(
            f"chouette: note: no evaluation of {reference[0]}..{reference[1]} yet; evaluate"
            f" models on it: chouette evaluate --model ID --start-date {reference[0]}"
            f" --end-date {reference[1]}",
            file=sys.stderr,
        )
    return OK


def _chosen_on_reference(state: dict[str, Any]) -> bool:
    return any(c["reason"] == champions.REFERENCE for c in state["champions"])


def _print(changes: list[champions.Change], state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(
            render.dumps(
                {**state, "changes": [c.__dict__ for c in changes]}  # dataclass fields
            )
        )
        return
    for c in changes:
        was = "" if c.previous_model_id is None else f" (was model {c.previous_model_id})"
        figure = "" if c.macro_f1 is None else f", macro F1 {c.macro_f1:.4f}"
        print(f"champion {c.class_set}: model {c.model_id} ({c.reason}{figure}){was}")
    ref = state["reference"]
    print(
        "reference range: "
        + ("none (models compared on shared datasets)" if ref is None
           else f"{ref['start_date']}..{ref['end_date']}")
    )  # fmt: skip
    rows = [
        (
            c["class_set"],
            c["model_id"],
            c["architecture"],
            c["reason"],
            c["macro_f1"],
            "" if c["eval_start_date"] is None
            else f"{c['eval_start_date']}..{c['eval_end_date']}",
            c["promotions"],
        )
        for c in state["champions"]
    ]  # fmt: skip
    if rows:
        print(
            render.table(
                rows,
                ("class_set", "model", "network", "reason", "macro_f1", "chosen on", "changes"),
            )
        )
    else:
        print("no champion yet")
