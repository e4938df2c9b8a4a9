"""``chouette worker api`` as a process: refuses to listen beyond loopback without a token,
starts on an empty database and says why it is not healthy yet."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from localstack.servers import free_port

pytestmark = pytest.mark.integration

CHOUETTE = [sys.executable, "-m", "chouette"]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("API_")}
    return {**base, "LOG_LEVEL": "INFO", **extra}


def test_beyond_loopback_without_a_token_it_refuses_to_start() -> None:
    done = subprocess.run(
        [*CHOUETTE, "worker", "api"],
        env=env(API_HOST="0.0.0.0", DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "API_HOST=0.0.0.0 listens beyond loopback without a token: set API_TOKEN" in (
        done.stderr
    )


def get(url: str) -> tuple[int, Any]:
    import json

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_worker_api_serves_and_reports_no_champion_as_503(db_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*CHOUETTE, "worker", "api"],
        env=env(API_PORT=str(port), DATABASE_URL=db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the API did not answer"
                time.sleep(0.3)
        assert status == 503
        assert body == {
            "status": "unavailable",
            "reason": "no champion yet (chouette promote MODEL)",
        }
        status, body = get(f"http://127.0.0.1:{port}/version")
        assert status == 200 and body["name"] == "chouette-pipeline"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "GET /health 503" in out
