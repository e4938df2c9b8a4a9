"""A listing whose links point at private addresses: nothing behind them is fetched."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from services.fetcher.client import ChouetteClient
from services.fetcher.validation import ImageRejected
from shared.settings import Settings
from tests.plugins.fetcher import fetcher_settings


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(out, format="JPEG")
    return out.getvalue()


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest.fixture
async def internal() -> AsyncIterator[dict[str, Any]]:
    """Another service on the API's host (think of a database's or a metrics port)."""
    hits: list[str] = []
    jpeg = _jpeg()

    async def secret(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=jpeg, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{tail:.*}", secret)
    runner, port = await _serve(app)
    yield {"port": port, "hits": hits}
    await runner.cleanup()


@pytest.fixture
async def api(internal: dict[str, Any]) -> AsyncIterator[int]:
    """An API whose listing links to private places, and once to its own media."""
    jpeg = _jpeg()

    async def listing(request: web.Request) -> web.Response:
        own = f"http://{request.host}"
        links = [
            f"http://127.0.0.1:{internal['port']}/internal.jpg",  # the API's host, other port
            f"http://localhost:{internal['port']}/internal.jpg",
            "http://169.254.169.254/latest/meta-data/iam.jpg",
            "http://10.0.0.7/a.jpg",
            f"{own}/media/own.jpg",
        ]
        entries = [{"media": link, "timestamp": "2021-06-01T10:00:00+02:00"} for link in links]
        return web.json_response(entries)

    async def media(request: web.Request) -> web.Response:
        return web.Response(body=jpeg, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/api/jobs/get-images/", listing)
    app.router.add_get("/media/{name}", media)
    runner, port = await _serve(app)
    yield port
    await runner.cleanup()


# The API named by address (links checked before connecting) or by name (checked by the
# resolver, which aiohttp gives the port): either way its host is trusted on its port only.
@pytest.mark.parametrize("api_host", ["127.0.0.1", "localhost"])
async def test_listing_with_links_to_private_addresses(
    api: int, internal: dict[str, Any], api_host: str
) -> None:
    api_url = f"http://{api_host}:{api}"
    settings = Settings(_env_file=None, chouette_api_url=api_url)  # type: ignore[call-arg]
    async with ChouetteClient.open(settings, fetcher_settings(max_retries=0)) as client:
        listing = await client.list_images("vine", dt.date(2021, 6, 1), dt.date(2021, 6, 1))
        *private, own = [image.url for image in listing.images]
        for link in private:
            with pytest.raises(ImageRejected) as info:
                await client.download(link)
            assert info.value.reason == "refused link", link
        assert (await client.download(own)).data[:2] == b"\xff\xd8"  # the API's own media
    assert internal["hits"] == []


def test_private_hosts_are_refused_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import FetcherSettings

    monkeypatch.delenv("FETCHER_ALLOW_PRIVATE_HOSTS", raising=False)
    assert FetcherSettings(_env_file=None).allow_private_hosts is False  # type: ignore[call-arg]
