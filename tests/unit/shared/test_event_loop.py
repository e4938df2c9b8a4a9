"""shared.runtime.run: the services' event loop is uvloop unless told otherwise."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from shared import runtime


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_services_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHOUETTE_EVENT_LOOP", raising=False)
    assert issubclass(runtime.run(_loop_type()), uvloop.Loop)


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOUETTE_EVENT_LOOP", "asyncio")
    loop_type = runtime.run(_loop_type())
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)
