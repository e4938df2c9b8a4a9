"""The API client against the in-process simulator: every quirk of the real API, each fault."""

from __future__ import annotations

import datetime as dt
import logging
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from services.fetcher.client import ChouetteClient, parse_retry_after, parse_timestamp
from services.fetcher.validation import ImageRejected, validate_image
from shared.errors import CredentialsRejected, PermanentError, RetryableError
from tests.plugins.fetcher import ClientFactory, SleepRecorder, fetcher_settings
from tests.plugins.simulator import SimulatorHandle

START, END = dt.date(2021, 6, 1), dt.date(2021, 6, 7)  # vine 10, ground 8, grass 3


async def first_link(client: ChouetteClient, tag: str = "vine") -> str:
    listing = await client.list_images(tag, START, END)
    return listing.images[0].url


# -- authentication ---------------------------------------------------------------------------


async def test_auto_auth_logs_in_once_and_sends_the_token(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    for tag in ("vine", "ground", "grass"):
        assert (await client.list_images(tag, START, END)).images
    assert client.auth_scheme == "Token"
    assert simulator.stats["login"] == 1
    assert simulator.stats["listing"] == 3


async def test_auto_auth_falls_back_to_basic_without_login(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(login_available=False)
    listing = await client.list_images("vine", START, END)
    assert len(listing.images) == 10
    assert client.auth_scheme == "Basic"


async def test_basic_auth_skips_login(
    open_client: ClientFactory, simulator: SimulatorHandle
) -> None:
    async with open_client(chouette_auth="basic") as client:
        assert (await client.list_images("vine", START, END)).images
    assert simulator.stats["login"] == 0


async def test_token_mode_without_login_endpoint_is_a_clear_error(
    open_client: ClientFactory, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(login_available=False)
    async with open_client(chouette_auth="token") as client:
        with pytest.raises(PermanentError, match="token login is not available"):
            await client.list_images("vine", START, END)


async def test_401_is_credentials_rejected_without_retry(
    client: ChouetteClient, simulator: SimulatorHandle, sleeps: SleepRecorder
) -> None:
    simulator.set_faults(unauthorized=True)
    with pytest.raises(CredentialsRejected, match=r"credentials rejected by 127\.0\.0\.1:\d+"):
        await client.list_images("vine", START, END)
    # One fresh login in case the token had expired, then it gives up: no loop, no backoff.
    assert (simulator.stats["login"], simulator.stats["listing"]) == (2, 2)
    assert sleeps.delays == []


async def test_expired_token_is_renewed_once(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    assert (await client.list_images("vine", START, END)).images
    simulator.state.tokens.clear()  # the API forgot (expired, revoked) every token
    assert (await client.list_images("vine", START, END)).images
    assert simulator.stats["login"] == 2


async def test_host_in_errors_never_shows_url_credentials(simulator: SimulatorHandle) -> None:
    async with aiohttp.ClientSession() as session:
        client = ChouetteClient(session, api_url="http://user:pw@127.0.0.1:9", auth="basic")
        assert client.host == "127.0.0.1:9"


async def test_403_is_credentials_rejected(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(forbidden=True)
    with pytest.raises(CredentialsRejected, match="HTTP 403"):
        await client.list_images("vine", START, END)


@pytest.mark.parametrize("auth", ["auto", "token", "basic"])
async def test_wrong_password_is_rejected_once(
    open_client: ClientFactory, simulator: SimulatorHandle, sleeps: SleepRecorder, auth: str
) -> None:
    async with open_client(chouette_auth=auth, chouette_password="wrong") as client:
        with pytest.raises(CredentialsRejected, match="credentials rejected by"):
            await client.list_images("vine", START, END)
    assert simulator.stats["login"] + simulator.stats["listing"] == 1
    assert sleeps.delays == []


async def test_no_credentials_against_a_protected_api(
    open_client: ClientFactory, simulator: SimulatorHandle
) -> None:
    async with open_client(chouette_username="", chouette_password="") as client:
        with pytest.raises(CredentialsRejected, match="no CHOUETTE_USERNAME"):
            await client.list_images("vine", START, END)


async def test_open_simulator_needs_no_credentials(
    simulator_factory, open_client: ClientFactory
) -> None:
    sim = await simulator_factory(username="", password="")
    async with open_client(sim) as client:
        assert (await client.list_images("vine", START, END)).images
        assert client.auth_scheme == "none"


async def test_password_and_token_never_logged(
    open_client: ClientFactory, simulator: SimulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    simulator.set_faults(fail_first=1, fail_on="login", fail_status=503)
    async with open_client() as client:
        await client.list_images("vine", START, END)
    simulator.set_faults(unauthorized=True)
    async with open_client() as client:
        with pytest.raises(CredentialsRejected) as info:
            await client.list_images("vine", START, END)
    token = next(iter(simulator.state.tokens))
    text = caplog.text + str(info.value)
    assert simulator.password not in text
    assert token not in text
    assert "retry" in caplog.text  # the 503 on login was logged


# -- listing ---------------------------------------------------------------------------------


async def test_listing_accepts_media_and_url_keys(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    media = await client.list_images("vine", START, END)
    simulator.set_faults(link_key="url")
    url = await client.list_images("vine", START, END)
    assert [i.source_key for i in media.images] == [i.source_key for i in url.images]
    assert all("?" not in i.source_key and "X-Amz-Signature" in i.url for i in url.images)


async def test_entries_without_link_are_skipped_and_counted(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    simulator.set_faults(missing_link_rate=1.0)
    listing = await client.list_images("vine", START, END)
    assert listing.images == ()
    assert listing.skipped == 10
    simulator.set_faults(missing_link_rate=0.5)
    listing = await client.list_images("vine", START, END)
    assert 0 < listing.skipped < 10
    assert len(listing.images) + listing.skipped == 10


@pytest.mark.parametrize("style", ["spec", "iso"])
async def test_both_timestamp_formats_keep_their_offset(
    client: ChouetteClient, simulator: SimulatorHandle, style: str
) -> None:
    simulator.set_faults(timestamp_format=style)
    listing = await client.list_images("vine", START, END)
    for image in listing.images:
        assert image.taken_at is not None
        assert image.taken_at.utcoffset() == dt.timedelta(hours=2)  # June: +0200
        assert START <= image.taken_at.date() <= END


async def test_empty_list(client: ChouetteClient, simulator: SimulatorHandle) -> None:
    simulator.set_faults(listing="empty")
    listing = await client.list_images("vine", START, END)
    assert (listing.images, listing.skipped) == ((), 0)


@pytest.mark.parametrize(
    ("shape", "message"),
    [("object", "expected a JSON list of images, got a JSON object"), ("html", "not JSON")],
)
async def test_body_that_is_not_a_json_list_is_a_clear_error(
    client: ChouetteClient, simulator: SimulatorHandle, shape: str, message: str
) -> None:
    simulator.set_faults(listing=shape)
    with pytest.raises(PermanentError, match=message):
        await client.list_images("vine", START, END)


# -- retries ---------------------------------------------------------------------------------


async def test_429_honours_retry_after(
    client: ChouetteClient, simulator: SimulatorHandle, sleeps: SleepRecorder
) -> None:
    simulator.set_faults(fail_first=2, fail_status=429, retry_after=7, fail_on="listing")
    listing = await client.list_images("vine", START, END)
    assert len(listing.images) == 10
    assert sleeps.delays == [7.0, 7.0]


async def test_500_then_success(
    client: ChouetteClient, simulator: SimulatorHandle, sleeps: SleepRecorder
) -> None:
    link = await first_link(client)
    simulator.set_faults(fail_first=2, fail_status=500, fail_on="media")
    download = await client.download(link)
    validate_image(download.data, max_pixels=10**7)
    assert len(sleeps.delays) == 2
    assert sleeps.delays[0] <= sleeps.delays[1] or sleeps.delays[1] == 0.05  # backs off


async def test_persistent_5xx_gives_up_as_retryable(
    client: ChouetteClient, simulator: SimulatorHandle, sleeps: SleepRecorder
) -> None:
    simulator.set_faults(fail_first=100, fail_status=503, fail_on="listing")
    with pytest.raises(RetryableError, match=r"HTTP 503.*gave up after 4 attempts"):
        await client.list_images("vine", START, END)
    assert len(sleeps.delays) == 3


async def test_timeout_is_retried(
    open_client: ClientFactory, simulator: SimulatorHandle, sleeps: SleepRecorder
) -> None:
    async with open_client(request_timeout=0.3) as client:
        link = await first_link(client)
        simulator.set_faults(hang_first=1, hang_seconds=5, fail_on="media")
        download = await client.download(link)
    assert download.data.startswith(b"\xff\xd8")
    assert simulator.stats["hung"] == 1
    assert len(sleeps.delays) == 1


async def test_connection_refused_ends_retryable(sleeps: SleepRecorder) -> None:
    async with aiohttp.ClientSession() as session:
        dead = ChouetteClient(
            session,
            api_url="http://127.0.0.1:9",  # discard port: nobody listens
            username="u",
            password="p",
            auth="basic",
            settings=fetcher_settings(max_retries=1),
            sleep=sleeps,
        )
        with pytest.raises(RetryableError, match="gave up after 2 attempts"):
            await dead.list_images("vine", START, END)
    assert len(sleeps.delays) == 1


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    client = ChouetteClient.__new__(ChouetteClient)
    client.settings = fetcher_settings(backoff_base=1.0, backoff_max=8.0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        delays = {client.backoff(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jitter
    assert client.backoff(0, retry_after=12.5) == 12.5


def test_parse_retry_after() -> None:
    now = dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-08-05 10:54:11.151 +0200", "2024-08-05T10:54:11.151000+02:00"),
        ("2024-08-05T10:54:11.151+02:00", "2024-08-05T10:54:11.151000+02:00"),
        ("2024-08-05T10:54:11+0200", "2024-08-05T10:54:11+02:00"),
        ("2024-08-05T08:54:11Z", "2024-08-05T08:54:11+00:00"),
        ("2024-08-05 10:54:11 -0530", "2024-08-05T10:54:11-05:30"),
        ("2024-08-05 10:54:11", "2024-08-05T10:54:11"),
    ],
)
def test_parse_timestamp(text: str, expected: str) -> None:
    parsed = parse_timestamp(text)
    assert parsed is not None
    assert parsed.isoformat() == expected


@pytest.mark.parametrize("value", [None, 17, "", "yesterday", "2024-13-45 10:00:00 +0200"])
def test_parse_timestamp_rejects_garbage(value: object) -> None:
    assert parse_timestamp(value) is None


# -- downloads -------------------------------------------------------------------------------


async def test_download_gives_bytes_and_sha256(client: ChouetteClient) -> None:
    import hashlib

    download = await client.download(await first_link(client))
    assert download.sha256 == hashlib.sha256(download.data).hexdigest()
    info = validate_image(download.data, max_pixels=10**7)
    assert (info.width, info.height, info.format) == (128, 96, "JPEG")


async def test_truncated_jpeg_is_rejected_by_validation(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    link = await first_link(client)
    simulator.set_faults(corrupt_rate=1.0)
    download = await client.download(link)
    with pytest.raises(ImageRejected) as info:
        validate_image(download.data, max_pixels=10**7)
    assert info.value.reason == "truncated"


async def test_non_image_body_is_rejected_by_validation(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    link = await first_link(client)
    simulator.set_faults(non_image_rate=1.0)
    download = await client.download(link)
    with pytest.raises(ImageRejected) as info:
        validate_image(download.data, max_pixels=10**7)
    assert info.value.reason == "not an image"


async def test_expired_link_is_a_rejected_image_not_a_credentials_error(
    client: ChouetteClient,
) -> None:
    link = await first_link(client)
    unsigned = link.split("?", 1)[0]
    with pytest.raises(ImageRejected, match="HTTP 403"):
        await client.download(unsigned)


async def test_size_limit_is_enforced_while_streaming_with_bounded_memory(
    open_client: ClientFactory, simulator: SimulatorHandle
) -> None:
    limit = 256 * 1024
    async with open_client(max_image_bytes=limit) as client:
        link = await first_link(client)
        simulator.set_faults(image_pad_bytes=64 * 1024 * 1024)  # 64 MiB, chunked, no length
        tracemalloc.start()
        try:
            with pytest.raises(ImageRejected) as info:
                await client.download(link)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.value.reason == "too large"
    assert peak < 8 * limit, f"peak {peak} bytes while streaming"


async def test_download_of_many_images_is_concurrent_and_bounded(
    open_client: ClientFactory, simulator: SimulatorHandle
) -> None:
    import asyncio
    import time

    simulator.set_faults(latency=0.05)
    async with open_client(concurrency=8) as client:
        listing = await client.list_images("vine", dt.date(2021, 6, 1), dt.date(2021, 7, 31))
        links = [i.url for i in listing.images][:32]
        started = time.perf_counter()
        await asyncio.gather(*(client.download(u) for u in links))
        elapsed = time.perf_counter() - started
    # 32 images, 8 at a time, 50 ms each: ~0.2 s; sequentially it would be 1.6 s.
    assert len(links) == 32
    assert 0.2 <= elapsed < 0.9


async def test_link_to_a_name_resolving_to_loopback_is_refused(client: ChouetteClient) -> None:
    # The API is 127.0.0.1 (trusted); "localhost" is another host that resolves to loopback.
    link = (await first_link(client)).replace("127.0.0.1", "localhost", 1)
    with pytest.raises(ImageRejected) as info:
        await client.download(link)
    assert info.value.reason == "refused link"


async def test_allow_private_hosts_lets_it_through(open_client: ClientFactory) -> None:
    async with open_client(allow_private_hosts=True) as client:
        link = (await first_link(client)).replace("127.0.0.1", "localhost", 1)
        download = await client.download(link)
    assert download.data.startswith(b"\xff\xd8")


# -- bounded answers -------------------------------------------------------------------------


@pytest.fixture
async def oversized_api() -> AsyncIterator[TestServer]:
    """An API whose login and listing answers are far larger than any real one."""
    import gzip

    from aiohttp import web

    huge = b"[" + b'{"media": "/m/x.jpg"},' * 200_000 + b"{}]"  # ~4.6 MB of JSON
    bomb = gzip.compress(huge, compresslevel=9)  # a few kB on the wire

    async def login(request: web.Request) -> web.Response:
        return web.Response(body=b'{"token": "' + b"t" * 1_000_000 + b'"}')

    async def listing(request: web.Request) -> web.Response:
        if request.query["tag"] == "grass":  # plain, with its Content-Length
            return web.Response(body=huge, content_type="application/json")
        return web.Response(
            body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    app = web.Application()
    app.router.add_post("/api/users/auth/", login)
    app.router.add_get("/api/jobs/get-images/", listing)
    async with TestServer(app) as server:
        yield server


@pytest.mark.parametrize("tag", ["vine", "grass"])  # compressed on the wire, and plain
async def test_a_listing_above_the_cap_is_refused_naming_the_setting(
    oversized_api: TestServer, tag: str
) -> None:
    async with aiohttp.ClientSession() as session:
        client = ChouetteClient(
            session,
            api_url=str(oversized_api.make_url("/")),
            settings=fetcher_settings(max_listing_bytes=1_000_000),
        )
        with pytest.raises(PermanentError, match=r"FETCHER_MAX_LISTING_BYTES \(1000000"):
            await client.list_images(tag, START, END)


async def test_a_login_answer_above_the_cap_is_refused(oversized_api: TestServer) -> None:
    async with aiohttp.ClientSession() as session:
        client = ChouetteClient(
            session, api_url=str(oversized_api.make_url("/")), username="u", password="p"
        )
        with pytest.raises(PermanentError, match=r"login at .*: the body is \d+ bytes, above"):
            await client.list_images("vine", START, END)
