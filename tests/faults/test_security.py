"""Security properties that must hold everywhere, checked on the code and the deployment files."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_sql_is_parameterized_everywhere() -> None:
    """ruff's S608 (SQL built from strings) is on and the code base passes it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "S608" in config["tool"]["ruff"]["lint"]["select"]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "S608", "--no-cache", "shared",
         "services"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_no_secret_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert ".env" not in tracked
    example = (ROOT / "config.example.env").read_text()
    for key in ("CHOUETTE_PASSWORD", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"):
        assert re.search(rf"^{key}=$", example, re.MULTILINE), f"{key} must be empty"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_passwords_come_from_the_environment() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    compose = _compose()
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if "PASS" in key or key in ("AMQP_URL", "DATABASE_URL"):
                assert "${" in str(value), f"{name}.{key} must come from the environment"
    # Every password interpolation is mandatory (`:?`), never a default value.
    for match in re.finditer(r"\$\{(\w*PASSWORD)([^}]*)\}", text):
        if match.group(1) != "CHOUETTE_PASSWORD":
            assert match.group(2).startswith(":?"), match.group(0)


def test_services_run_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    compose = _compose()
    for name in ("fetcher", "trainer", "evaluator", "simulator", "api"):
        service = compose["services"][name]
        assert "build" in service, f"{name} must run the project's image"
        assert service.get("user", "chouette") not in ("root", "0")


def test_ports_published_on_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} publicly"


def test_compose_api_needs_its_token_and_is_health_checked() -> None:
    from services.api.exposure import exposure_problem

    api = _compose()["services"]["api"]
    env = api["environment"]
    assert env["API_TOKEN"].startswith("${API_TOKEN"), "the token comes from the environment"
    # Listening on the container's network without a token: the API refuses to start.
    assert exposure_problem(env["API_HOST"], "") is not None
    assert exposure_problem(env["API_HOST"], "a-token") is None
    assert api["command"] == ["api"]
    assert "/health" in " ".join(api["healthcheck"]["test"])
    assert api["ports"] == [f"127.0.0.1:{env['API_PORT']}:{env['API_PORT']}"]


def test_consumer_timeout_outlasts_the_trainer_limit() -> None:
    from shared.settings import TrainerSettings, consumer_timeout_ms

    compose = _compose()
    erl_args = compose["services"]["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    timeout_ms = int(re.search(r"consumer_timeout (\d+)", erl_args).group(1))  # type: ignore[union-attr]
    limit = TrainerSettings(_env_file=None).max_seconds  # type: ignore[call-arg]
    assert timeout_ms > limit * 1000
    assert consumer_timeout_ms(TrainerSettings(_env_file=None)) > limit * 1000  # type: ignore[call-arg]
