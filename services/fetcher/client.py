"""The Chouette image API client (aiohttp): authentication, listing, streaming downloads.

It survives what is known of the real API:

- authentication per ``CHOUETTE_AUTH``: ``auto`` logs in at ``/api/users/auth/`` and sends
  ``Authorization: Token …``, falling back to HTTP Basic when login is not available
  (404/405/501); 400/401/403 end in :class:`CredentialsRejected` at once, never a loop;
- the image link under ``media`` or ``url`` (entries with neither are skipped and counted),
  both timestamp formats with their offsets, a body that is not a JSON list is an error;
- bounded concurrency (``FETCHER_CONCURRENCY`` requests in flight), a timeout per request,
  retries with exponential backoff and jitter on 429 (honouring ``Retry-After``), 5xx,
  timeouts and dropped connections; after the last retry a :class:`RetryableError`;
- images streamed with a size limit, links checked by :mod:`services.fetcher.links`.

Credentials and tokens are kept in memory only and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import email.utils
import functools
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from pydantic import SecretStr
from yarl import URL

from services.fetcher.links import GuardedResolver, LinkPolicy, source_key
from services.fetcher.validation import ImageRejected
from shared import backoff
from shared.errors import CredentialsRejected, PermanentError, RetryableError
from shared.settings import FetcherSettings, Settings

logger = logging.getLogger(__name__)

LOGIN_PATH = "/api/users/auth/"
LISTING_PATH = "/api/jobs/get-images/"
LINK_KEYS = ("media", "url")
MAX_REDIRECTS = 3
CHUNK_BYTES = 64 * 1024
# A login answer is a token in a small JSON object: anything larger is not one.
MAX_LOGIN_BYTES = 64 * 1024
RETRY_AFTER_MAX = 300.0
USER_AGENT = "chouette-pipeline-fetcher/0.1"

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ListedImage:
    tag: str
    url: str  # the full (signed, expiring) link: download soon
    source_key: str  # the link without its query string
    taken_at: dt.datetime | None


@dataclass(frozen=True)
class Listing:
    tag: str
    images: tuple[ListedImage, ...]
    skipped: int  # entries with neither ``media`` nor ``url``


@dataclass(frozen=True)
class Download:
    data: bytes
    sha256: str


class _ImageName:
    """``image <link without query>``, built only when a log line or an error needs it."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return f"image {source_key(self.url)}"


class _Transient(Exception):
    """An answer worth retrying (429, 5xx)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


# -- parsing ------------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"^\s*(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)\s*"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?\s*$",
    re.IGNORECASE,
)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """``2024-08-05 10:54:11.151 +0200`` or ISO ``2024-08-05T10:54:11.151+02:00``; keeps the
    offset. None for anything else (the image is kept, its time unknown)."""
    if not isinstance(value, str):
        return None
    match = _TIMESTAMP.match(value)
    if match is None:
        return None
    day, clock, zone = match.groups()
    if zone is None:
        offset = ""
    elif zone.upper() == "Z":
        offset = "+00:00"
    else:
        digits = zone[1:].replace(":", "").ljust(4, "0")
        offset = f"{zone[0]}{digits[:2]}:{digits[2:]}"
    try:
        return dt.datetime.fromisoformat(f"{day}T{clock}{offset}")
    except ValueError:
        return None


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace").strip().replace("\n", " ")
    return text + ("…" if len(body) > limit else "")


async def read_capped(resp: aiohttp.ClientResponse, limit: int, what: str, bound: str) -> bytes:
    """The body of an API answer, refused (:class:`PermanentError`) past ``limit`` bytes: as
    sent (``Content-Length``, before any reading) and once decompressed (while streaming, so
    that a small gzip body cannot grow into gigabytes in memory)."""
    sent = resp.content_length
    if sent is not None and sent > limit:
        raise PermanentError(f"{what}: the body is {sent} bytes, above {bound} ({limit})")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise PermanentError(
                f"{what}: the body is above {bound} ({limit} bytes) once decompressed"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(value: Any) -> str:
    return {dict: "a JSON object", str: "a JSON string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


# -- the client ---------------------------------------------------------------------------


class ChouetteClient:
    """One per service process; wraps one aiohttp session (see :meth:`open`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_url: str,
        username: str = "",
        password: SecretStr | str = "",
        auth: str = "auto",
        settings: FetcherSettings | None = None,
        policy: LinkPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._session = session
        self.api_url = api_url.rstrip("/")
        parts = urlsplit(self.api_url)
        # host[:port], never user:password@ even if the URL embeds them.
        self.host = (parts.hostname or self.api_url) + (f":{parts.port}" if parts.port else "")
        self._api = URL(self.api_url)
        self._username = username
        self._password = password if isinstance(password, SecretStr) else SecretStr(password)
        if auth not in ("auto", "token", "basic"):
            raise ValueError(f"CHOUETTE_AUTH must be auto, token or basic, not {auth!r}")
        self._auth_mode = auth
        self.settings = settings or FetcherSettings()
        self.policy = policy or LinkPolicy.for_api(self.api_url)
        self._sleep = sleep
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        self._auth_header: str | None = None
        self._auth_lock = asyncio.Lock()
        self.auth_scheme: str | None = None  # "Token", "Basic" or "none" once known

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, fetcher: FetcherSettings, *, sleep: Sleep = asyncio.sleep
    ) -> AsyncIterator[ChouetteClient]:
        """A client with its own session, connector and guarded resolver; closed on exit."""
        policy = LinkPolicy.for_api(
            settings.chouette_api_url, allow_private=fetcher.allow_private_hosts
        )
        connector = aiohttp.TCPConnector(
            limit=max(1, fetcher.concurrency), resolver=GuardedResolver(policy), ttl_dns_cache=60
        )
        timeout = aiohttp.ClientTimeout(total=fetcher.request_timeout)
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),  # stateless API: no cookie bookkeeping
        ) as session:
            yield cls(
                session,
                api_url=settings.chouette_api_url,
                username=settings.chouette_username,
                password=settings.chouette_password,
                auth=settings.chouette_auth,
                settings=fetcher,
                policy=policy,
                sleep=sleep,
            )

    # -- authentication -------------------------------------------------------------------

    async def _auth_headers(self) -> dict[str, str]:
        if self._auth_header is None:
            async with self._auth_lock:
                if self._auth_header is None:
                    self._auth_header = await self._authenticate()
        return {"Authorization": self._auth_header} if self._auth_header else {}

    async def _authenticate(self) -> str:
        if not self._username:
            self.auth_scheme = "none"
            logger.warning("no CHOUETTE_USERNAME configured: calling %s without auth", self.host)
            return ""
        secret = self._password.get_secret_value()
        basic = "Basic " + base64.b64encode(f"{self._username}:{secret}".encode()).decode()
        if self._auth_mode == "basic":
            self.auth_scheme = "Basic"
            return basic
        token = await self._login()
        if token is not None:
            self.auth_scheme = "Token"
            logger.info("logged in to %s as %s (token auth)", self.host, self._username)
            return f"Token {token}"
        if self._auth_mode == "token":
            raise PermanentError(
                f"token login is not available at {self.api_url}{LOGIN_PATH}; "
                "set CHOUETTE_AUTH=basic or auto"
            )
        self.auth_scheme = "Basic"
        logger.info("token login not available at %s; using HTTP Basic", self.host)
        return basic

    async def _login(self) -> str | None:
        """The token, or None when the API has no login endpoint."""
        url = self.api_url + LOGIN_PATH
        credentials = {
            "username": self._username,
            "password": self._password.get_secret_value(),
        }

        async def attempt() -> tuple[int, bytes]:
            async with self._session.post(url, json=credentials) as resp:
                if resp.status in (404, 405, 501):
                    return resp.status, b""
                self._raise_for_api_status(resp, "login")
                body = await read_capped(
                    resp, MAX_LOGIN_BYTES, f"login at {self.host}", "a token answer"
                )
                return resp.status, body

        status, body = await self._retrying(f"login at {self.host}", attempt)
        if status != 200:
            return None
        try:
            token = json.loads(body)["token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(
                f"login at {self.host} answered without a token: {_snippet(body)}"
            ) from exc
        if not isinstance(token, str) or not token:
            raise PermanentError(f"login at {self.host} answered an empty token")
        return token

    def _raise_for_api_status(self, resp: aiohttp.ClientResponse, what: str) -> None:
        status = resp.status
        if status in (400, 401, 403) and (what == "login" or status != 400):
            hint = (
                "check CHOUETTE_USERNAME and CHOUETTE_PASSWORD"
                if self._username
                else "no CHOUETTE_USERNAME/CHOUETTE_PASSWORD configured"
            )
            raise CredentialsRejected(
                f"credentials rejected by {self.host} (HTTP {status} on {what}; {hint})"
            )
        if status == 429 or status >= 500:
            raise _Transient(status, parse_retry_after(resp.headers.get("Retry-After")))
        if status >= 400:
            raise PermanentError(f"{what} at {self.host} failed: HTTP {status} {resp.reason}")

    # -- retries ----------------------------------------------------------------------------

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before retry ``attempt`` (0-based): the server's Retry-After when it gave one,
        else exponential with jitter (half fixed, half random) capped at ``backoff_max``."""
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_MAX)
        return backoff.jittered(attempt, self.settings.backoff_base, self.settings.backoff_max)

    async def _retrying(self, what: object, attempt: Callable[[], Awaitable[T]]) -> T:
        attempts = self.settings.max_retries + 1
        for n in range(attempts):
            retry_after = None
            try:
                async with self._slots:
                    return await attempt()
            except _Transient as exc:
                problem, retry_after = str(exc), exc.retry_after
            except TimeoutError:
                problem = f"no answer within {self.settings.request_timeout:g}s"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if n + 1 == attempts:
                raise RetryableError(f"{what}: {problem} (gave up after {attempts} attempts)")
            delay = self.backoff(n, retry_after)
            logger.warning(
                "%s: %s; retry %d/%d in %.2fs", what, problem, n + 1, attempts - 1, delay
            )
            await self._sleep(delay)
        raise AssertionError("unreachable")

    # -- listing ----------------------------------------------------------------------------

    async def list_images(self, tag: str, start: dt.date, end: dt.date) -> Listing:
        """The images of ``tag`` taken from ``start`` to ``end`` (inclusive)."""
        url = self.api_url + LISTING_PATH
        params = {"tag": tag, "start_date": start.isoformat(), "end_date": end.isoformat()}
        what = f"listing of {tag!r} {start}..{end}"

        async def attempt(headers: dict[str, str]) -> bytes:
            async with self._session.get(url, params=params, headers=headers) as resp:
                self._raise_for_api_status(resp, what)
                limit = self.settings.max_listing_bytes
                return await read_capped(
                    resp, limit, f"{what} from {self.host}", "FETCHER_MAX_LISTING_BYTES"
                )

        headers = await self._auth_headers()
        try:
            body = await self._retrying(what, functools.partial(attempt, headers))
        except CredentialsRejected:
            if self.auth_scheme != "Token":
                raise
            # A token can expire or be revoked while the service runs: log in again, once.
            if self._auth_header == headers.get("Authorization"):
                self._auth_header = None
            logger.info("token refused by %s; logging in again", self.host)
            body = await self._retrying(
                what, functools.partial(attempt, await self._auth_headers())
            )
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise PermanentError(
                f"{what} from {self.host}: the body is not JSON ({_snippet(body)!r})"
            ) from exc
        if not isinstance(payload, list):
            raise PermanentError(
                f"{what} from {self.host}: expected a JSON list of images, got {_describe(payload)}"
            )
        images: list[ListedImage] = []
        skipped = 0
        for entry in payload:
            link = None
            if isinstance(entry, dict):
                link = next((entry[k] for k in LINK_KEYS if isinstance(entry.get(k), str)), None)
            if not link or not link.strip():
                skipped += 1
                continue
            link = urljoin(url, link.strip())  # a relative link is relative to the API
            images.append(
                ListedImage(tag, link, source_key(link), parse_timestamp(entry.get("timestamp")))
            )
        logger.info("%s: %d images, %d entries without link", what, len(images), skipped)
        return Listing(tag, tuple(images), skipped)

    # -- downloading ------------------------------------------------------------------------

    async def download(self, url: str) -> Download:
        """The bytes of one image; :class:`ImageRejected` for a link that cannot give one."""
        what = _ImageName(url)
        for _ in range(MAX_REDIRECTS + 1):
            self.policy.check(url)
            # encoded=True: a pre-signed link must reach the server byte for byte.
            target = URL(url, encoded=True)
            same_host = (target.host, target.port) == (self._api.host, self._api.port)
            # Credentials go to the API's own host only, never to an object store.
            headers = await self._auth_headers() if same_host else {}
            result = await self._retrying(what, functools.partial(self._fetch, target, headers))
            if isinstance(result, Download):
                return result
            url = urljoin(url, result)
        raise ImageRejected("too many redirects", str(what))

    async def _fetch(self, url: URL, headers: dict[str, str]) -> Download | str:
        """One attempt: the image, or the Location of a redirect (checked by the caller)."""
        limit = self.settings.max_image_bytes
        async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
            status = resp.status
            if status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    raise ImageRejected(f"HTTP {status}", "redirect without Location")
                return location
            if status == 429 or status >= 500:
                raise _Transient(status, parse_retry_after(resp.headers.get("Retry-After")))
            if status != 200:
                # 403 from an object store usually means the signed link expired.
                raise ImageRejected(f"HTTP {status}")
            if resp.content_length is not None and resp.content_length > limit:
                raise ImageRejected("too large", f"{resp.content_length} bytes, limit {limit}")
            buffer = bytearray()
            digest = hashlib.sha256()
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                if len(buffer) + len(chunk) > limit:
                    raise ImageRejected("too large", f"over the limit of {limit} bytes")
                buffer += chunk
                digest.update(chunk)
        return Download(bytes(buffer), digest.hexdigest())
