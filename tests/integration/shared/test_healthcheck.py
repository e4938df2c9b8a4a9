"""The containers' health check: healthy with both servers, a one-line reason without."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from shared import healthcheck
from tests.plugins.servers import Servers

pytestmark = pytest.mark.integration


def test_healthy_when_both_servers_answer(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", servers.database_url)
    monkeypatch.setenv("AMQP_URL", servers.amqp_url)
    assert healthcheck.main() == 0


def test_unhealthy_with_a_wrong_password_and_shows_none(
    servers: Servers, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = urlsplit(servers.database_url)
    netloc = f"{parts.username}:wr0ng-s3cret@{parts.hostname}:{parts.port}"
    monkeypatch.setenv("DATABASE_URL", urlunsplit(parts._replace(netloc=netloc)))
    monkeypatch.setenv("AMQP_URL", servers.amqp_url)
    assert healthcheck.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("unhealthy:") and err.count("\n") == 1
    assert "wr0ng-s3cret" not in err
