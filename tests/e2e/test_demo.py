"""``make demo``'s command (``python -m chouette demo``) as a user runs it.

Two runs, small (ResNet50V2 at 32 px, one epoch, a week of images) so they fit the suite:

- from nothing: no RabbitMQ or PostgreSQL answers at the configured URLs, so the demo
  starts both under its ``CHOUETTE_HOME``, starts the simulator and the three services,
  trains, evaluates on a later range, prints the result table, and then stops everything
  it started: afterwards no port of it is open and no process of it is left;
- with API credentials in a ``.env`` and servers that already run: the demo uses the
  configured API (here the session's simulator, standing in for the real one) instead of
  starting its own simulator, and leaves the servers it did not start running.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localstack.processes import ROOT, port_open
from localstack.servers import free_port
from tests.plugins.servers import delete_namespace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SMALL = ["--arch", "ResNet50V2", "--image-size", "32", "--epochs", "1"]
# A month of each season of the shipped real photos (the simulator's folder mode).
PHOTO_MONTHS = [
    "--train-start", "2023-04-01", "--train-end", "2023-04-30",
    "--eval-start", "2024-04-01", "--eval-end", "2024-04-30",
]  # fmt: skip
# A week of the generated field dataset, and a later one.
GENERATED_WEEKS = [
    "--train-start", "2021-05-01", "--train-end", "2021-05-07",
    "--eval-start", "2021-05-11", "--eval-end", "2021-05-17",
]  # fmt: skip
DEMO_TIMEOUT_S = 900
NUL = bytes(1)


def run_demo(env: dict[str, str], cwd: Path, dates: list[str]) -> subprocess.CompletedProcess[str]:
    # From another directory than the checkout, so no developer's .env is read.
    return subprocess.run(
        [sys.executable, "-m", "chouette", "demo", *SMALL, *dates],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )


def clean_env(**values: str) -> dict[str, str]:
    """The test run's environment without any pipeline setting of its own."""
    prefixes = ("CHOUETTE_", "AMQP_", "DATABASE_", "BROKER_", "FETCHER_", "TRAINER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(values)
    return env


def processes_under(home: Path) -> list[str]:
    """Running processes started for ``home``: servers with their data there, and services
    whose environment names it (the demo hands its environment down)."""
    found = []
    mark = str(home).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if mark in cmdline or mark in environ:
            found.append(f"{proc.name}: {cmdline.replace(NUL, b' ').decode()[:200]}")
    return found


def assert_result_table(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    table = re.search(r"^model +network +evaluated on .*?\n\n", done.stdout, re.S | re.M)
    assert table, done.stdout
    rows = [r for r in table.group(0).splitlines()[2:] if r]
    assert [r.split()[1] for r in rows] == ["ResNet50V2", "ResNet50V2"]
    assert "held-out test split" in rows[0] and "later date range" in rows[1]
    for row in rows:
        *_, accuracy, macro_f1, balanced = row.split()
        assert all(0 <= float(x) <= 1 for x in (accuracy, macro_f1, balanced))
    assert "confusion matrix" in done.stdout
    assert "[demo] demo finished in" in done.stderr


def test_demo_from_nothing_starts_everything_and_stops_it_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    amqp_port, pg_port = free_port(), free_port()
    env = clean_env(
        CHOUETTE_HOME=str(home),
        AMQP_URL=f"amqp://demo:demo-pass@127.0.0.1:{amqp_port}/",
        DATABASE_URL=f"postgresql://demo:demo-pass@127.0.0.1:{pg_port}/demo",
        BROKER_NAMESPACE="demo",
    )
    try:
        done = run_demo(env, tmp_path, PHOTO_MONTHS)
        assert_result_table(done)
        assert "[demo] starting local RabbitMQ and PostgreSQL" in done.stderr
        assert (
            "simulator, fetcher, trainer, evaluator (simulated API serving the photos of "
            f"{ROOT / 'data' / 'field-tiles'}" in done.stderr
        )
        assert "[demo] stopping local RabbitMQ and PostgreSQL" in done.stderr
        # Everything it started is stopped: servers and services alike.
        assert not port_open(amqp_port) and not port_open(pg_port)
        assert processes_under(home) == []
        logs = home / "demo-logs"
        assert {p.name for p in logs.glob("*.log")} >= {
            "simulator.log", "fetcher.log", "trainer.log", "evaluator.log",
        }  # fmt: skip
    finally:  # a failed run must not leave servers behind either
        if processes_under(home):
            subprocess.run(
                [sys.executable, "-m", "chouette", "services", "down"],
                env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=120, check=False,
            )  # fmt: skip


async def test_demo_with_credentials_uses_the_configured_api_and_keeps_running_servers(
    tmp_path: Path, servers: Any, db_url: str, namespace: str, simulator_server: Any
) -> None:
    home = tmp_path / "home"
    env = clean_env(
        CHOUETTE_HOME=str(home),
        AMQP_URL=servers.amqp_url,
        DATABASE_URL=db_url,
        BROKER_NAMESPACE=namespace,
    )
    # The "real" API (credentials required) configured as a user does: in a .env file where
    # the demo runs (the services run from the checkout, so they must get it from the demo).
    dotenv = "".join(f"{k}={v}\n" for k, v in simulator_server.env().items())
    (tmp_path / ".env").write_text(dotenv)
    logins_before = simulator_server.stats["login"]
    try:
        done = await asyncio.to_thread(run_demo, env, tmp_path, GENERATED_WEEKS)
    finally:
        await delete_namespace(servers.amqp_url, namespace)
    assert_result_table(done)
    assert f"fetcher, trainer, evaluator (real API at {simulator_server.url}" in done.stderr
    assert "starting local RabbitMQ" not in done.stderr
    assert "stopping local RabbitMQ" not in done.stderr
    assert not (home / "demo-logs" / "simulator.log").exists()
    assert simulator_server.stats["login"] > logins_before  # it logged in to that API
    # The servers it found running are still running.
    for url in (servers.amqp_url, servers.database_url):
        port = int(re.search(r":(\d+)/", url).group(1))  # type: ignore[union-attr]
        assert port_open(port)
