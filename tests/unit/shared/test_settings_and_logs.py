"""Settings never leak secrets; logs carry the request id."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from shared import logs
from shared.settings import ApiSettings, Settings, redact_url

EXAMPLE = Path(__file__).parents[3] / "config.example.env"


def test_defaults_equal_config_example(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith(("CHOUETTE_", "AMQP_", "DATABASE_", "BROKER_", "LOG_", "API_")):
            monkeypatch.delenv(key)
    values = dict(
        line.split("=", 1)
        for line in EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    api = ApiSettings(_env_file=None)  # type: ignore[call-arg]
    dumped = {f"api_{k}": v for k, v in api.model_dump().items()}
    assert {k.upper() for k in dumped} <= set(values)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for field, value in {**settings.model_dump(), **dumped}.items():
        key = field.upper()
        if key not in values:
            continue
        actual = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if isinstance(actual, bool):  # written true/false in the file
            actual = str(actual).lower()
        assert str(actual) == values[key], key


def test_every_documented_variable_is_read_by_some_setting() -> None:
    from shared import settings as module

    known: set[str] = set()
    for cls in (module.Settings, module.FetcherSettings, module.TrainerSettings,
                module.EvaluatorSettings, module.ApiSettings):  # fmt: skip
        prefix = cls.model_config.get("env_prefix", "")
        known |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    documented = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", EXAMPLE.read_text(), re.MULTILINE)
    unknown = [
        name for name in documented
        if name not in known
        and not name.startswith(("SIMULATOR_", "POSTGRES_", "RABBITMQ_"))
        and not name.endswith("_MEMORY_LIMIT")  # docker-compose.yml's own
    ]  # fmt: skip
    assert not unknown


def test_secrets_never_in_repr_or_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOUETTE_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("AMQP_URL", "amqp://bob:amqp-secret@host:5672/")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    text = repr(settings) + str(settings) + str(settings.model_dump())
    assert "hunter2-secret" not in text
    assert "amqp-secret" not in text
    assert settings.chouette_password.get_secret_value() == "hunter2-secret"
    assert redact_url(settings.amqp_url) == "amqp://bob:***@host:5672/"


def test_redact_url_leaves_urls_without_password_alone() -> None:
    assert redact_url("amqp://host/") == "amqp://host/"


def test_json_log_lines_carry_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs._RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with logs.request_context("req-42"):
            logger.info("stored %d images", 3)
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "req-42"
    assert first["message"] == "stored 3 images"
    assert second["request_id"] == "-"


def test_every_setting_is_documented_in_config_example() -> None:
    from services.simulator.settings import SimulatorSettings
    from shared import settings as module

    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", EXAMPLE.read_text(), re.MULTILINE))
    missing = []
    for cls in (module.Settings, module.FetcherSettings, module.TrainerSettings,
                module.EvaluatorSettings, module.ApiSettings, SimulatorSettings):  # fmt: skip
        prefix = cls.model_config.get("env_prefix", "")
        missing += [
            f"{prefix}{name}".upper()
            for name in cls.model_fields
            if f"{prefix}{name}".upper() not in documented
        ]
    assert not missing


@pytest.mark.parametrize("prefix", ["FETCHER", "TRAINER", "EVALUATOR"])
def test_a_prefetch_below_one_is_refused(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.settings import EvaluatorSettings, FetcherSettings, TrainerSettings

    kind = {"FETCHER": FetcherSettings, "TRAINER": TrainerSettings}.get(prefix, EvaluatorSettings)
    monkeypatch.setenv(f"{prefix}_PREFETCH", "0")
    with pytest.raises(ValidationError, match="prefetch"):
        kind(_env_file=None)  # type: ignore[call-arg]
