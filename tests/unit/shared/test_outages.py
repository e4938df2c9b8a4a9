"""Waiting out a database outage: probe, bounded backoff, and when to give up."""

from __future__ import annotations

from shared.outages import OutageWait


def probe_failing(times: int) -> tuple[OutageWait, list[int]]:
    calls: list[int] = []

    async def probe() -> None:
        calls.append(1)
        if len(calls) <= times:
            raise ConnectionRefusedError("down")

    return OutageWait(probe=probe, backoff=0.01, backoff_max=0.02, max_seconds=5), calls


async def test_a_reachable_database_is_no_outage() -> None:
    wait, calls = probe_failing(0)
    assert not await wait.waited_out()  # the failure is the message's own
    assert len(calls) == 1


async def test_an_outage_is_waited_out_until_the_database_answers() -> None:
    wait, calls = probe_failing(4)
    assert await wait.waited_out()
    assert len(calls) == 5


async def test_an_outage_longer_than_the_bound_gives_up() -> None:
    wait, _ = probe_failing(10**9)
    wait.max_seconds = 0.1
    assert not await wait.waited_out()
