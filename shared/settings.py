"""Settings from the environment (and a git-ignored ``.env``), read once per process.

Defaults equal ``config.example.env``: the local services that
``chouette services up`` starts, so that with no ``.env`` everything works locally.
Secrets are ``SecretStr``: their repr is ``'**********'`` and they never reach a log
line. URLs that embed a password are shown through :func:`redact_url`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.pretrained import KERAS_BASE_URL

ENV_FILE = ".env"


def _config(prefix: str = "") -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix, env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore"
    )


# scheme://user:password@ — the password up to the *last* "@": generated passwords often
# hold "/", "#", "?" or "@" unencoded, which end the netloc for urlsplit and would leave
# them shown. Over-redacting (an "@" further on in a query) is the safe side.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):(.*)@", re.DOTALL)
# Secrets given as query parameters (libpq's ?password=, ?sslpassword=, tokens).
_SECRET_PARAM = re.compile(
    r"([?&;](?:password|passwd|pass|pwd|sslpassword|secret|token|api_key)=)[^&;#]*",
    re.IGNORECASE,
)


def redact_url(url: str | SecretStr) -> str:
    """``amqp://user:secret@host/`` → ``amqp://user:***@host/`` (safe to log).

    Also ``?password=…`` and similar query parameters → ``?password=***``.
    """
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    redacted = _USERINFO.sub(r"\1:***@", raw, count=1)
    return _SECRET_PARAM.sub(r"\1***", redacted)


class Settings(BaseSettings):
    """The environment contract (README "Configuration") plus the shared knobs."""

    model_config = _config()

    chouette_api_url: str = "http://127.0.0.1:8081"
    chouette_username: str = ""
    chouette_password: SecretStr = SecretStr("")
    chouette_auth: Literal["auto", "token", "basic"] = "auto"

    amqp_url: SecretStr = SecretStr("amqp://chouette:chouette@127.0.0.1:5672/")
    database_url: SecretStr = SecretStr("postgresql://chouette:chouette@127.0.0.1:5432/chouette")
    # Least privilege (README "Guarantees", shared/privileges.py): each process may connect
    # as a role of its own; empty, it uses DATABASE_URL (one owner role for everything).
    migrate_database_url: SecretStr = SecretStr("")  # owns the schema: `chouette migrate`
    fetcher_database_url: SecretStr = SecretStr("")
    trainer_database_url: SecretStr = SecretStr("")
    evaluator_database_url: SecretStr = SecretStr("")
    api_database_url: SecretStr = SecretStr("")  # the prediction API (read-only)
    cli_database_url: SecretStr = SecretStr("")  # train, evaluate, promote, prune
    reader_database_url: SecretStr = SecretStr("")  # status, watch, models, report, ...
    # The same for RabbitMQ: a user per service, and one for the CLI that may only publish
    # (shared/broker.py: permissions); MIGRATE_AMQP_URL declares the exchanges and queues.
    migrate_amqp_url: SecretStr = SecretStr("")
    fetcher_amqp_url: SecretStr = SecretStr("")
    trainer_amqp_url: SecretStr = SecretStr("")
    evaluator_amqp_url: SecretStr = SecretStr("")
    cli_amqp_url: SecretStr = SecretStr("")
    # RabbitMQ's management API (e.g. http://rabbitmq:15672): set, `chouette migrate`
    # creates the users of the *_AMQP_URLs above through it, as MIGRATE_AMQP_URL's user
    # (chouette/rabbit_users.py). Empty: the users must exist already.
    rabbitmq_management_url: str = ""
    # Services and writing CLI commands apply pending migrations at start-up (with
    # MIGRATE_DATABASE_URL) and declare the broker's exchanges and queues. false: only
    # `chouette migrate` does, as when each process has a role of its own that cannot.
    auto_migrate: bool = True

    # Prefix of every exchange and queue name: lets several pipelines (or tests) share a broker.
    broker_namespace: str = "chouette"
    # Deliveries of one message before it is dead-lettered (RabbitMQ x-delivery-limit).
    broker_delivery_limit: int = 5
    # Bodies longer than this are dead-lettered without being parsed (messages carry ids
    # and parameters: a few kB).
    broker_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    amqp_heartbeat: int = 30
    # A handler failing while PostgreSQL is unreachable waits this long for it to come
    # back and handles the same delivery again, without spending a delivery attempt.
    database_outage_wait_seconds: int = Field(900, ge=0)
    # While RabbitMQ is unreachable, a handler's results wait this long to be published and
    # its delivery to be settled; the handler itself goes on (shared/redelivery.py).
    broker_outage_wait_seconds: int = Field(900, ge=0)

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    # `chouette prune`: weights of models that are not champions go this many days after
    # their training (shared/retention.py).
    retention_weights_days: float = Field(30.0, ge=0)

    # Where `chouette services up` keeps RabbitMQ and PostgreSQL data.
    chouette_home: Path = Path(".chouette")

    def database_url_for(self, process: str) -> SecretStr:
        """The URL ``process`` connects with (``fetcher``, ``trainer``, ``evaluator``,
        ``api``, ``cli``, ``reader``, ``migrate``): its own, else ``DATABASE_URL``.
        ``reader`` falls back on ``CLI_DATABASE_URL`` before ``DATABASE_URL``."""
        own: SecretStr = getattr(self, f"{process}_database_url")
        if not own.get_secret_value() and process == "reader":
            own = self.cli_database_url
        return own if own.get_secret_value() else self.database_url

    def amqp_url_for(self, process: str) -> SecretStr:
        """The RabbitMQ URL of ``process`` (``fetcher``, ``trainer``, ``evaluator``,
        ``cli``, ``migrate``): its own, else ``AMQP_URL``."""
        own: SecretStr = getattr(self, f"{process}_amqp_url")
        return own if own.get_secret_value() else self.amqp_url

    @property
    def has_api_credentials(self) -> bool:
        return bool(self.chouette_username and self.chouette_password.get_secret_value())


class FetcherSettings(BaseSettings):
    model_config = _config("FETCHER_")

    # 20 in flight: ~18x a sequential loop at 20 ms per request (bench/bench_fetch.py).
    concurrency: int = 20
    request_timeout: float = 30.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    allow_private_hosts: bool = False
    # One listing answer (per tag), as sent and once decompressed.
    max_listing_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # Distinct images in one dataset: a wider date range is refused, naming this setting.
    max_dataset_images: int = Field(20_000, ge=1)
    prefetch: int = Field(4, ge=1)
    # Seconds between two `fetching n/N` progress writes of one request.
    progress_interval: float = 0.5
    # Grouped split: photos (of any tag) taken less than this many seconds after the previous
    # one are one capture session and stay on one side of train/val/test (0: no sessions).
    session_gap_seconds: float = Field(120.0, ge=0)
    # Near duplicates: images whose 64-bit perceptual hashes (dHash) differ in at most this
    # many bits stay on one side too (-1: no near-duplicate grouping).
    phash_max_distance: int = Field(6, ge=-1, le=64)


class TrainerSettings(BaseSettings):
    model_config = _config("TRAINER_")

    # Hard limit on one training; RabbitMQ's consumer_timeout is set above it.
    max_seconds: int = 6 * 3600
    prefetch: int = Field(1, ge=1)
    min_train_images: int = 6
    weight_part_bytes: int = 4 * 1024 * 1024
    gpu_mixed_precision: bool = True
    gpu_xla: bool = True
    # Where a training writes its splits' resized images (one private subdirectory per
    # request, removed when its training ends; "" = a private temporary directory;
    # services/trainer/cache_dir.py). Needs ~ 12 * image_size**2 bytes per image.
    cache_dir: str = ""
    # A training's lease in Postgres, renewed every third of it while training: another
    # trainer given the same request waits instead of training it twice at once.
    lease_seconds: float = 60.0
    # Grace period on SIGTERM before the current message is abandoned (redelivered).
    stop_grace_seconds: float = 5.0
    # Compiled networks kept between requests of the same shape (0: build each time);
    # saves tracing the training step again (ResNet50: 25-45 s on 2 CPU cores).
    model_cache: int = Field(2, ge=0)
    # The only directory --weights PATH may name files in (*.h5, HDF5; a relative PATH is
    # taken inside it). "" = --weights PATH refused (shared/weight_files.py).
    weights_dir: str = ""
    # Where --weights imagenet comes from when it is not cached (shared.pretrained): Keras's
    # public URL, an http(s) mirror serving the same file names, or a local directory.
    weights_source: str = KERAS_BASE_URL
    # The cache of those files ("" = Keras's: $KERAS_HOME/models, KERAS_HOME default ~/.keras).
    weights_cache_dir: str = ""
    # Seconds a download may wait for data before it is abandoned.
    weights_timeout: float = Field(60.0, gt=0)


class EvaluatorSettings(BaseSettings):
    model_config = _config("EVALUATOR_")

    prefetch: int = Field(1, ge=1)
    batch_size: int = 32
    # A new model becomes champion when its macro F1 beats the champion's by this much.
    promotion_margin: float = 0.01
    # Networks kept with their traced inference graph between evaluations (0: none).
    model_cache: int = Field(2, ge=0)
    # Test-time augmentation: each image scored as the mean over its 8 flips/90° turns
    # (8 times the inference work; bench/bench_quality.py measures what it is worth).
    tta: bool = True


class ApiSettings(BaseSettings):
    """The prediction API (``services/api``)."""

    model_config = _config("API_")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Bearer token every data endpoint asks for; required (the API refuses to start
    # without one) whenever ``host`` is not a loopback address.
    token: SecretStr = SecretStr("")
    # Limits of one call: the request body, the pixels of one image, images per call.
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(50_000_000, ge=1)
    max_images: int = Field(64, ge=1)
    # Concurrent /predict calls are scored together: up to this many images per batch;
    # before a call, the model waits at most this long for as many images as requests were
    # open at once lately.
    batch_size: int = Field(32, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    # Test-time augmentation: each image scored as the mean over its 8 flips/turns, as the
    # evaluator (EVALUATOR_TTA) and `chouette predict` score by default, so that the API
    # answers what the evaluations measured; false: 8 times less work per image.
    tta: bool = True
    # Networks kept loaded (the champion and recently asked-for models).
    model_cache: int = Field(2, ge=1)


def consumer_timeout_ms(trainer: TrainerSettings) -> int:
    """RabbitMQ's consumer_timeout must outlast the longest training (plus an hour's margin)."""
    return (trainer.max_seconds + 3600) * 1000
