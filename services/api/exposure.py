"""Who may reach the API: a bearer token is required whenever it listens beyond loopback."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, "" or "0.0.0.0": reachable from elsewhere


def exposure_problem(host: str, token: str) -> str | None:
    """Why the API must not start with these settings, or None."""
    if token or is_loopback(host):
        return None
    return (
        f"API_HOST={host or '(all addresses)'} listens beyond loopback without a token: set"
        " API_TOKEN (clients send `Authorization: Bearer <token>`), or API_HOST=127.0.0.1"
    )
