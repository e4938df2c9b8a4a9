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
            if "PASS" in key or key.endswith(("AMQP_URL", "DATABASE_URL")):
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


def test_private_hosts_are_refused_by_default_everywhere() -> None:
    """``FETCHER_ALLOW_PRIVATE_HOSTS`` is false in the settings, the example and compose."""
    from shared.settings import FetcherSettings

    fields = FetcherSettings.model_fields
    assert fields["allow_private_hosts"].default is False
    example = (ROOT / "config.example.env").read_text()
    assert re.search(r"^FETCHER_ALLOW_PRIVATE_HOSTS=false$", example, re.MULTILINE)
    for name, service in _compose()["services"].items():
        value = str((service.get("environment") or {}).get("FETCHER_ALLOW_PRIVATE_HOSTS", ""))
        default = re.fullmatch(r"\$\{FETCHER_ALLOW_PRIVATE_HOSTS:-(\w*)\}", value)
        effective = default.group(1) if default else value
        assert effective.lower() in ("", "false", "0"), f"{name}: {value}"


def _one_shots(services: dict) -> set[str]:
    """Services others wait for to *complete* (``migrate``): they run once and exit."""
    return {
        dependency
        for service in services.values()
        for dependency, condition in (service.get("depends_on") or {}).items()
        if condition.get("condition") == "service_completed_successfully"
    }


def test_compose_services_are_hardened() -> None:
    """Health checks (but on one-shots), no-new-privileges, capabilities dropped, memory
    limits: everywhere."""
    services = _compose()["services"]
    one_shots = _one_shots(services)
    for name, service in services.items():
        if name not in one_shots:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("cap_drop") == ["ALL"], name
        assert set(service.get("cap_add", [])) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID",
                                                   "SETUID"}, name  # fmt: skip
        if name not in ("rabbitmq", "postgres"):
            assert not service.get("cap_add"), f"{name} runs as its own user: no capability"
        assert re.fullmatch(r"\$\{\w+_MEMORY_LIMIT:-\d+[mg]\}", str(service.get("mem_limit"))), name
        assert not service.get("privileged"), name


def _db_user(url: str) -> str:
    """The user of a compose DATABASE_URL (its password is a ${...} interpolation)."""
    match = re.match(r"postgresql://([^:@/]+):", url)
    assert match, url
    return match.group(1)


def test_compose_services_connect_as_their_own_database_roles() -> None:
    """Only `migrate` connects as the schema's owner; each service as its own login role
    (deploy/postgres-roles.sh), never migrating, started once `migrate` succeeded; the
    image's superuser is used by nothing."""
    services = _compose()["services"]
    assert services["migrate"]["entrypoint"] == ["chouette", "migrate"]
    # It declares the queues too: the services may not.
    assert "AMQP_URL" in services["migrate"]["environment"]
    assert set(services["migrate"]["depends_on"]) == {"rabbitmq", "postgres"}
    owner = _db_user(services["migrate"]["environment"]["DATABASE_URL"])
    assert owner == "chouette" != services["postgres"]["environment"]["POSTGRES_USER"]
    assert any("postgres-roles.sh" in v for v in services["postgres"]["volumes"])
    users = set()
    for name in ("fetcher", "trainer", "evaluator", "api"):
        env = services[name]["environment"]
        user = _db_user(env["DATABASE_URL"])
        assert user not in (owner, "postgres"), f"{name} connects as {user}"
        users.add(user)
        assert str(env["AUTO_MIGRATE"]).lower() == "false", name
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    assert len(users) == 4
    script = (ROOT / "deploy" / "postgres-roles.sh").read_text()
    for login in ("fetcher", "trainer", "evaluator"):
        assert f"{login}:chouette_{login}" in script
    assert "api:chouette_reader" in script


def _amqp_user(url: str) -> str:
    match = re.match(r"amqp://([^:@/]+):", url)
    assert match, url
    return match.group(1)


def test_compose_services_connect_as_their_own_rabbitmq_users() -> None:
    """Only `migrate` holds the administrator (`chouette`, RABBITMQ_DEFAULT_USER): it
    declares the queues and creates, through the management API, the user of each
    `*_AMQP_URL`; every other service connects as its own user, the API as none."""
    services = _compose()["services"]
    admin = services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"]
    migrate = services["migrate"]["environment"]
    assert _amqp_user(migrate["AMQP_URL"]) == admin
    assert migrate["RABBITMQ_MANAGEMENT_URL"] == "http://rabbitmq:15672"
    for name, service in services.items():
        if name in ("migrate", "rabbitmq"):
            continue
        env = service.get("environment") or {}
        urls = {key: value for key, value in env.items() if key.endswith("AMQP_URL")}
        if name in ("fetcher", "trainer", "evaluator"):
            own = f"{name.upper()}_AMQP_URL"
            assert set(urls) == {"AMQP_URL", own}, name  # the health check reads AMQP_URL
            assert {_amqp_user(url) for url in urls.values()} == {f"chouette_{name}"}, name
            assert migrate[own] == urls[own], f"migrate must create {name}'s user"
        else:
            assert not urls, f"{name} needs no RabbitMQ user"
    assert _amqp_user(migrate["CLI_AMQP_URL"]) == "chouette_cli"


def test_the_simulator_runs_only_in_the_demo_profile() -> None:
    services = _compose()["services"]
    assert services["simulator"].get("profiles") == ["demo"]
    for name, service in services.items():
        assert "simulator" not in (service.get("depends_on") or {}), name
        if name != "simulator":
            assert not service.get("profiles"), f"{name} must start without a profile"


# Versions with no known advisory (Pillow's decoders and aiohttp's HTTP parser and client
# read data from the network); raise them when a new advisory is published.
MINIMUM_VERSIONS = {"pillow": (12, 3, 0), "aiohttp": (3, 14, 1)}


def _version(text: str) -> tuple[int, ...]:
    parts = [int(part) for part in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def test_dependencies_require_versions_past_known_advisories() -> None:
    from importlib.metadata import version

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name, minimum in MINIMUM_VERSIONS.items():
        (spec,) = [d for d in config["project"]["dependencies"] if re.match(rf"{name}\b", d, re.I)]
        lower = re.search(r">=\s*([\d.]+)", spec)
        assert lower and _version(lower.group(1)) >= minimum, f"{spec}: at least {minimum}"
        assert _version(version(name)) >= minimum, f"installed {name} {version(name)}"


def _locked(name: str) -> dict[str, str]:
    """``{normalized name: version}`` of a requirements lock file; every entry hashed."""
    text = (ROOT / name).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", re.sub(r"^#.*\n", "", text, flags=re.M).strip())
    locked = {}
    for entry in entries:
        assert "--hash=sha256:" in entry, f"{name}: {entry.splitlines()[0]} has no hash"
        package, version = entry.split()[0].split("==")
        locked[re.sub(r"[-_.]+", "-", package).lower()] = version
    return locked


def test_locks_pin_every_dependency_with_hashes() -> None:
    from packaging.requirements import Requirement

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime, dev = _locked("requirements.lock"), _locked("requirements-dev.lock")
    for lock, specs in (
        (runtime, config["project"]["dependencies"]),
        (
            dev,
            config["project"]["dependencies"] + config["project"]["optional-dependencies"]["dev"],
        ),
    ):
        for spec in specs:
            requirement = Requirement(spec)
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            assert name in lock, f"{name} is not locked"
            assert requirement.specifier.contains(lock[name]), f"{name}=={lock[name]} vs {spec}"
    assert all(dev.get(name) == version for name, version in runtime.items())
    for name, minimum in MINIMUM_VERSIONS.items():
        assert _version(runtime[name]) >= minimum, f"locked {name} {runtime[name]}"


def test_image_and_ci_install_from_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert re.search(r"pip install --no-deps \.", dockerfile)
    assert "requirements.lock" not in (ROOT / ".dockerignore").read_text()
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(VENV\)/\.installed:.*?(?=^\S)", makefile, re.M | re.S)
    assert recipe and "--require-hashes -r requirements-dev.lock" in recipe.group(0)
    assert "--no-deps -e ." in recipe.group(0)
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # which builds .venv as above
