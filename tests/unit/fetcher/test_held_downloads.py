"""The fetcher holds at most a bounded number of downloaded images, whatever the dataset."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from typing import Any

import pytest

from services.fetcher import dataset as dataset_module
from services.fetcher import store
from services.fetcher.client import Download, ListedImage, Listing
from services.fetcher.dataset import DatasetBuilder, SplitParams, held_downloads
from services.fetcher.validation import ImageRejected
from shared.errors import PermanentError
from shared.messages import DatasetSpec
from shared.settings import FetcherSettings

N_IMAGES = 200


class FastClient:
    """Downloads answer at once: only the database (slow here) limits the build."""

    host = "api.test"

    async def list_images(self, tag: str, start: dt.date, end: dt.date) -> Listing:
        images = tuple(
            ListedImage(tag, f"https://api.test/{tag}/{i}.jpg?sig=x", f"{tag}/{i}", None)
            for i in range(N_IMAGES)
        )
        return Listing(tag, images, 0)

    async def download(self, url: str) -> Download:
        data = url.encode() * 100
        return Download(data, hashlib.sha256(data).hexdigest())


async def test_downloads_wait_for_the_slow_database_instead_of_piling_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = 0
    peak = 0
    real_download = FastClient.download

    async def download(self: Any, url: str) -> Download:
        nonlocal held, peak
        result = await real_download(self, url)
        held += 1
        peak = max(peak, held)
        return result

    async def known_sources(*_: Any) -> dict[str, str]:
        return {}

    async def check_image(data: bytes, **_: Any) -> Any:
        return object()

    async def save_image(*_: Any, **__: Any) -> None:
        nonlocal held
        await asyncio.sleep(0.001)  # a slow database
        held -= 1
        raise ImageRejected("stored by the test")

    monkeypatch.setattr(FastClient, "download", download)
    monkeypatch.setattr(store, "known_sources", known_sources)
    monkeypatch.setattr(store, "save_image", save_image)
    monkeypatch.setattr(dataset_module, "check_image", check_image)
    settings = FetcherSettings(_env_file=None, concurrency=4)  # type: ignore[call-arg]
    builder = DatasetBuilder(None, FastClient(), settings)  # type: ignore[arg-type]
    spec = DatasetSpec(
        start_date=dt.date(2021, 5, 1), end_date=dt.date(2021, 6, 1), tags=("vine", "ground")
    )
    with pytest.raises(PermanentError):
        await builder.build(spec, SplitParams())
    assert held == 0
    assert 1 <= peak <= held_downloads(4) == 8
