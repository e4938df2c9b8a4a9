"""Image links: their source key, and the guard against fetching what we should not.

A listing is data from the network: a link could point at ``file://``, at the cloud
metadata service (169.254.169.254) or at a database on the fetcher's own network. Only
http(s) links are fetched, and a link whose host is (or resolves to) a private, loopback,
link-local or reserved address is refused, unless it is the API's own host *on the API's
port* or ``FETCHER_ALLOW_PRIVATE_HOSTS=true`` (false by default, docker-compose included).
The check runs twice: on the URL before the request (IP literals) and in the connector's
resolver at connection time (host names; this also defeats DNS answers that change between
check and use).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from services.fetcher.validation import ImageRejected

_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT


class UnsafeLink(ImageRejected):
    """A link the fetcher refuses to follow."""

    def __init__(self, detail: str) -> None:
        super().__init__("refused link", detail)


def source_key(url: str) -> str:
    """The link without query string and fragment: stable across re-signed listings."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def is_public_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


DEFAULT_PORTS = {"http": 80, "https": 443}


def endpoint(url: str) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL, the scheme's default port filled in."""
    parts = urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return (parts.hostname or "").lower().strip("[]"), port


class LinkPolicy:
    """Which links may be fetched (see the module docstring).

    ``trusted`` are ``(host, port)`` pairs: the API's own host is trusted on the API's port
    only, so that a listing cannot send the fetcher to another service on that host (a
    database, a metrics port) by changing the port.
    """

    def __init__(
        self, trusted: Iterable[tuple[str, int]] = (), *, allow_private: bool = False
    ) -> None:
        self.trusted = {(h.lower().strip("[]"), int(p)) for h, p in trusted if h}
        self.allow_private = allow_private

    @classmethod
    def for_api(cls, api_url: str, *, allow_private: bool = False) -> LinkPolicy:
        return cls([endpoint(api_url)], allow_private=allow_private)

    def host_allowed(self, host: str, port: int, addresses: Iterable[str]) -> bool:
        if self.allow_private or (host.lower().strip("[]"), port) in self.trusted:
            return True
        return all(is_public_address(a) for a in addresses)

    def check(self, url: str) -> None:
        """Raise :class:`UnsafeLink` for a link that must not be fetched."""
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            raise UnsafeLink(f"malformed link ({exc})") from exc
        if parts.scheme.lower() not in ("http", "https"):
            raise UnsafeLink(f"scheme {parts.scheme or 'none'!r} is not http(s)")
        if not host:
            raise UnsafeLink("link without a host")
        _, port = endpoint(url)
        if _is_ip_literal(host) and not self.host_allowed(host, port, [host]):
            raise UnsafeLink(f"{host}:{port} is a private or reserved address")


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default, then refuses private addresses per the policy."""

    def __init__(self, policy: LinkPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._policy.host_allowed(host, port, (r["host"] for r in results)):
            raise UnsafeLink(f"{host} resolves to a private or reserved address")
        return results

    async def close(self) -> None:
        await self._inner.close()
