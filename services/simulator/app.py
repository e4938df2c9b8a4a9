"""A stand-in for the Chouette image API, with switchable faults.

POST /api/users/auth/          {"username", "password"} → {"token"} (DRF: 400 if wrong)
GET  /api/jobs/get-images/     ?tag=&start_date=&end_date= → JSON list;
                               ``Authorization: Token …`` or HTTP Basic
GET  /media/field/<id>.jpg?…   the image behind a signed-looking, expiring link (no auth)

It serves the generated field dataset (``field``) or, with ``SIMULATOR_PHOTOS_DIR``, a
folder of labelled real photos (``photos``), with the same quirks.
GET|PUT /_simulator/faults     read or change the faults (JSON object of Faults fields)
GET  /_simulator/stats         request counters per kind
POST /_simulator/reset         faults back to the start-up ones, counters to zero
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import random
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from services.simulator import field
from services.simulator.photos import Photo, PhotoFolder
from services.simulator.settings import Faults, Kind, SimulatorSettings

logger = logging.getLogger(__name__)

LOGIN_PATH = "/api/users/auth/"
LISTING_PATH = "/api/jobs/get-images/"
MEDIA_PREFIX = "/media/field/"
ADMIN_PREFIX = "/_simulator/"
LINK_TTL_SECONDS = 3600
_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)


@dataclasses.dataclass
class Simulator:
    """The state of one simulator: settings, faults, issued tokens and counters."""

    settings: SimulatorSettings
    faults: Faults
    tokens: set[str] = dataclasses.field(default_factory=set)
    stats: Counter[str] = dataclasses.field(default_factory=Counter)
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(0))
    signing_key: bytes = dataclasses.field(default_factory=lambda: secrets.token_bytes(16))
    # Real photos served instead of the generated field dataset (``SIMULATOR_PHOTOS_DIR``).
    photos: PhotoFolder | None = None

    @property
    def open_access(self) -> bool:
        return not self.settings.username

    def reset(self) -> None:
        self.faults = Faults.from_settings(self.settings)
        self.stats.clear()
        self.rng = random.Random(0)


SIMULATOR = web.AppKey("simulator", Simulator)


def create_app(
    settings: SimulatorSettings | None = None, faults: Faults | None = None
) -> web.Application:
    settings = settings or SimulatorSettings()
    sim = Simulator(settings, faults or Faults.from_settings(settings))
    if settings.photos_dir:
        sim.photos = PhotoFolder(settings.photos_dir, settings.seed)
    app = web.Application(middlewares=[_faults_middleware])
    app[SIMULATOR] = sim
    app.router.add_post(LOGIN_PATH, login)
    app.router.add_get(LISTING_PATH, listing)
    app.router.add_get(MEDIA_PREFIX + "{image_id}.jpg", media)
    app.router.add_get(ADMIN_PREFIX + "faults", get_faults)
    app.router.add_put(ADMIN_PREFIX + "faults", put_faults)
    app.router.add_get(ADMIN_PREFIX + "stats", get_stats)
    app.router.add_post(ADMIN_PREFIX + "reset", post_reset)
    return app


def _kind(path: str) -> Kind | None:
    if path == LOGIN_PATH:
        return "login"
    if path == LISTING_PATH:
        return "listing"
    if path.startswith(MEDIA_PREFIX):
        return "media"
    return None


def _error(status: int, retry_after: float | None) -> web.Response:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    body = {"detail": f"simulated error {status}"}
    return web.json_response(body, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    kind = _kind(request.path)
    if kind is None:
        return await handler(request)
    sim = request.app[SIMULATOR]
    f = sim.faults
    sim.stats[kind] += 1
    if f.latency > 0:
        await asyncio.sleep(f.latency)
    if f.hang_first > 0 and f.applies_to(kind):
        f.hang_first -= 1
        sim.stats["hung"] += 1
        await asyncio.sleep(f.hang_seconds)
    if f.fail_first > 0 and f.applies_to(kind):
        f.fail_first -= 1
        sim.stats[f"status_{f.fail_status}"] += 1
        return _error(f.fail_status, f.retry_after)
    if kind != "login" and f.error_rate > 0 and sim.rng.random() < f.error_rate:
        sim.stats[f"status_{f.error_status}"] += 1
        return _error(f.error_status, f.retry_after)
    response = await handler(request)
    if kind == "media" and response.status == 200:
        sim.stats["downloads"] += 1
    return response


# -- authentication -----------------------------------------------------------------------


def _token_for(sim: Simulator, username: str) -> str:
    return hmac.new(sim.signing_key, f"token:{username}".encode(), hashlib.sha1).hexdigest()


def _credentials_match(sim: Simulator, username: str, password: str) -> bool:
    if sim.open_access:
        return True
    return hmac.compare_digest(username, sim.settings.username) and hmac.compare_digest(
        password, sim.settings.password
    )


async def login(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    if not sim.faults.login_available:
        raise web.HTTPNotFound(text="Not Found")
    try:
        body = await request.json()
        username, password = str(body["username"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"detail": "username and password are required"}, status=400)
    if not _credentials_match(sim, username, password):
        return web.json_response(
            {"non_field_errors": ["Unable to log in with provided credentials."]}, status=400
        )
    token = _token_for(sim, username)
    sim.tokens.add(token)
    return web.json_response({"token": token})


def _authorized(sim: Simulator, header: str) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme == "Token":
        return value in sim.tokens
    if scheme == "Basic":
        try:
            username, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return _credentials_match(sim, username, password)
    return sim.open_access and not header


# -- listing ------------------------------------------------------------------------------


def format_timestamp(taken_at: dt.datetime, style: str) -> str:
    """``2024-08-05 10:54:11.151 +0200`` (the spec) or ``2024-08-05T10:54:11.151+02:00``."""
    millis = f"{taken_at.microsecond // 1000:03d}"
    offset = taken_at.strftime("%z")  # +0200
    if style == "iso":
        return f"{taken_at:%Y-%m-%dT%H:%M:%S}.{millis}{offset[:3]}:{offset[3:]}"
    return f"{taken_at:%Y-%m-%d %H:%M:%S}.{millis} {offset}"


def _signed_link(request: web.Request, sim: Simulator, image_id: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    signature = hmac.new(sim.signing_key, f"{image_id}:{now}".encode(), hashlib.sha256)
    return (
        f"{request.scheme}://{request.host}{MEDIA_PREFIX}{image_id}.jpg"
        f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=SIMULATOR%2Fchouette"
        f"&X-Amz-Date={now}&X-Amz-Expires={LINK_TTL_SECONDS}&X-Amz-SignedHeaders=host"
        f"&X-Amz-Signature={signature.hexdigest()}"
    )


def _entry(request: web.Request, sim: Simulator, image: field.FieldImage | Photo) -> dict[str, Any]:
    f, seed = sim.faults, sim.settings.seed
    style = f.timestamp_format
    if style == "mixed":
        style = "iso" if field.unit_hash(seed, image.image_id, "ts") < 0.5 else "spec"
    taken_at = image.taken_at  # a share of entries is listed with a timestamp a year early
    if field.unit_hash(seed, image.image_id, "out-of-range") < f.out_of_range_rate:
        taken_at -= dt.timedelta(days=365)
    entry: dict[str, Any] = {
        "id": image.ordinal,
        "tag": image.tag,
        "timestamp": format_timestamp(taken_at, style),
        "job": f"job-{image.taken_at:%Y%m%d}",
    }
    missing_rate = (
        field.NATURAL_MISSING_LINK_RATE if f.missing_link_rate is None else f.missing_link_rate
    )
    if field.unit_hash(seed, image.image_id, "link") >= missing_rate:
        entry[f.link_key] = _signed_link(request, sim, image.image_id)
    return entry


async def listing(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    if sim.faults.unauthorized:
        return web.json_response({"detail": "Invalid token."}, status=401)
    if sim.faults.forbidden:
        return web.json_response({"detail": "Forbidden."}, status=403)
    if not _authorized(sim, request.headers.get("Authorization", "")):
        return web.json_response(
            {"detail": "Authentication credentials were not provided."},
            status=401,
            headers={"WWW-Authenticate": 'Token, Basic realm="api"'},
        )
    query = request.query
    try:
        tag = query["tag"]
        start = dt.date.fromisoformat(query["start_date"])
        end = dt.date.fromisoformat(query["end_date"])
    except (KeyError, ValueError):
        return web.json_response(
            {"detail": "tag, start_date and end_date (YYYY-MM-DD) are required"}, status=400
        )
    shape = sim.faults.listing
    if shape == "object":
        return web.json_response({"results": [], "detail": "not a list"})
    if shape == "html":
        return web.Response(text="<html><body>Maintenance</body></html>", content_type="text/html")
    if shape == "empty" or tag not in field.TAGS:
        return web.json_response([])
    images: Iterable[field.FieldImage | Photo] = (
        sim.photos.catalogue(start, end, tag)
        if sim.photos is not None
        else field.catalogue(start, end, tag, sim.settings.seed)
    )
    return web.json_response([_entry(request, sim, image) for image in images])


# -- media --------------------------------------------------------------------------------


async def media(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    seed = sim.settings.seed
    image_id = request.match_info["image_id"]
    image = sim.photos.lookup(image_id) if sim.photos is not None else field.lookup(image_id, seed)
    if image is None:
        raise web.HTTPNotFound(text="NoSuchKey")
    if "X-Amz-Signature" not in request.query:
        return web.Response(body=_ACCESS_DENIED, status=403, content_type="application/xml")
    f = sim.faults
    if field.unit_hash(seed, image.image_id, "non-image") < f.non_image_rate:
        return web.Response(body=_ACCESS_DENIED, content_type="application/xml")
    data = (
        sim.photos.data(image)
        if isinstance(image, Photo) and sim.photos is not None
        else field.render(image.image_id, image.tag, seed)
    )
    if field.unit_hash(seed, image.image_id, "corrupt") < f.corrupt_rate:
        data = data[: len(data) // 2]
    if f.image_pad_bytes <= 0:
        return web.Response(body=data, content_type="image/jpeg")
    # Streamed without Content-Length: the client must enforce its size limit while reading.
    response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(data)
    chunk = bytes(64 * 1024)
    left = f.image_pad_bytes
    while left > 0:
        await response.write(chunk[: min(left, len(chunk))])
        left -= len(chunk)
    await response.write_eof()
    return response


# -- administration -----------------------------------------------------------------------


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(dataclasses.asdict(request.app[SIMULATOR].faults))


async def put_faults(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object")
        sim.faults.update(**changes)
    except ValueError as exc:
        return web.json_response({"detail": str(exc)}, status=400)
    return web.json_response(dataclasses.asdict(sim.faults))


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[SIMULATOR].stats))


async def post_reset(request: web.Request) -> web.Response:
    request.app[SIMULATOR].reset()
    return web.json_response({"reset": True})
