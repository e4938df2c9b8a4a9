"""The simulator's settings (``SIMULATOR_`` prefix) and its switchable faults."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

Kind = Literal["login", "listing", "media"]


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIMULATOR_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8081
    # Changes the whole generated field dataset (catalogue and pixels), and the dates
    # given to the source photos of ``photos_dir``.
    seed: int = 2020
    # A folder of labelled photos (``<dir>/<tag>/*.jpg``) to serve instead of the generated
    # field dataset; each source photo is dated in one of two seasons (``photos.SEASONS``).
    photos_dir: str = ""
    # When set, login, Basic auth and tokens must match; when empty any caller is accepted.
    username: str = ""
    password: str = ""
    # Start-up faults (all can be changed at run time through PUT /_simulator/faults).
    latency_ms: float = 0.0
    error_rate: float = 0.0
    link_key: Literal["media", "url"] = "media"
    timestamp_format: Literal["spec", "iso", "mixed"] = "mixed"


@dataclass
class Faults:
    """What the simulator does wrong. Counters (``fail_first``, ``hang_first``) count down."""

    latency: float = 0.0  # seconds added to every login, listing and media response
    error_rate: float = 0.0  # share of listing/media requests answered ``error_status``
    error_status: int = 503
    fail_first: int = 0  # the next N requests of ``fail_on`` answer ``fail_status``
    fail_status: int = 500
    fail_on: Literal["any", "login", "listing", "media"] = "any"
    retry_after: float | None = None  # Retry-After header sent with fail_status/error_status
    hang_first: int = 0  # the next N requests of ``fail_on`` wait ``hang_seconds`` first
    hang_seconds: float = 30.0
    unauthorized: bool = False  # listing answers 401 whatever the credentials
    forbidden: bool = False  # listing answers 403
    login_available: bool = True  # False: /api/users/auth/ answers 404 (Basic only)
    link_key: Literal["media", "url"] = "media"  # the key of the image link in listings
    timestamp_format: Literal["spec", "iso", "mixed"] = "mixed"
    missing_link_rate: float | None = None  # None: the natural ~3 % of entries without link
    out_of_range_rate: float = 0.0  # share of listing entries whose timestamp is a year early
    corrupt_rate: float = 0.0  # share of images served truncated
    non_image_rate: float = 0.0  # share of images served as an XML error page with 200
    listing: Literal["normal", "empty", "object", "html"] = "normal"
    image_pad_bytes: int = 0  # bytes streamed after each image (size limits, memory)

    def update(self, **changes: Any) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        for name, value in changes.items():
            setattr(self, name, value)

    def applies_to(self, kind: Kind) -> bool:
        return self.fail_on in ("any", kind)

    @classmethod
    def from_settings(cls, settings: SimulatorSettings) -> Faults:
        return cls(
            latency=settings.latency_ms / 1000,
            error_rate=settings.error_rate,
            link_key=settings.link_key,
            timestamp_format=settings.timestamp_format,
        )
