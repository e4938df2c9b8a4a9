"""Secrets stay out of logs, reprs, command lines and world-readable files."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from localstack import servers as local_services
from localstack.servers import PostgresServer, RabbitServer, ServiceError
from shared.broker import Broker
from shared.settings import redact_url

SECRET = "s3cr/t#x?y@z"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"amqp://bob:{SECRET}@host:5672/", "amqp://bob:***@host:5672/"),
        ("postgresql://bob:a/b@host/db", "postgresql://bob:***@host/db"),
        ("postgresql://bob:a#b@host/db", "postgresql://bob:***@host/db"),
        ("postgresql://bob:a?b@host/db", "postgresql://bob:***@host/db"),
        ("postgresql://bob:p%2Fq@host/db", "postgresql://bob:***@host/db"),
        ("postgresql://host/db?user=bob&password=hunter2", "postgresql://host/db?user=bob&password=***"),
        ("postgresql://host/db?password=hunter2&sslmode=require",
         "postgresql://host/db?password=***&sslmode=require"),
        ("amqp://host/", "amqp://host/"),
        ("http://host:8080/x", "http://host:8080/x"),
    ],
)  # fmt: skip
def test_redact_url_hides_every_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_reprs_hold_no_password(tmp_path: Path) -> None:
    broker = Broker(f"amqp://bob:{SECRET}@host:5672/")
    postgres = PostgresServer(tmp_path / "pg", password=SECRET)
    rabbit = RabbitServer(tmp_path / "rabbit", password=SECRET)
    for obj in (broker, postgres, rabbit):
        assert SECRET not in repr(obj), type(obj).__name__
        assert SECRET not in str(obj), type(obj).__name__


def test_psql_never_gets_the_password_on_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append({"cmd": cmd, **kwargs})
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(local_services.subprocess, "run", fake_run)
    monkeypatch.setattr(local_services, "pg_bin", lambda name: f"/usr/bin/{name}")
    PostgresServer(tmp_path / "pg", password=SECRET)._ensure_role_and_database()
    assert calls
    for call in calls:
        assert not any(SECRET in arg for arg in call["cmd"]), call["cmd"]
        assert SECRET not in str(call.get("env") or "")
        assert SECRET not in (call.get("input") or "")  # only its SCRAM verifier goes
    assert any("SCRAM-SHA-256$4096:" in (call.get("input") or "") for call in calls)


def test_scram_verifier_matches_postgresql() -> None:
    # RFC 7677's test vector for SCRAM-SHA-256 (user "user", password "pencil"): the
    # server signature it gives derives from the same ServerKey.
    import base64
    import hashlib
    import hmac

    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = local_services.scram_verifier("pencil", salt=salt)
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256" and rest.startswith("4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    stored_key, server_key = (base64.b64decode(k) for k in rest.split("$")[1].split(":"))
    auth_message = (
        "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    signature = hmac.new(server_key, auth_message.encode(), hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert len(stored_key) == 32
    assert local_services.scram_verifier("pâté") == ""  # the server normalises those itself


def test_psql_quote_keeps_the_value_exact() -> None:
    quote = local_services._psql_quote
    assert quote("plain") == "'plain'"
    assert quote("it's") == "'it''s'"
    assert quote("a\\b") == "'a\\\\b'"
    assert quote("line\nbreak") == "'line\\nbreak'"


def test_rabbitmq_conf_is_private_before_the_password_is_written(tmp_path: Path) -> None:
    server = RabbitServer(tmp_path / "rabbit", password=SECRET)
    server.base_dir.mkdir()
    # A write after rabbitmq.conf fails: the file with the password is already private.
    (server.base_dir / "enabled_plugins").mkdir()
    with pytest.raises(OSError):
        server._write_config()
    conf = server.base_dir / "rabbitmq.conf"
    assert SECRET in conf.read_text()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600


def test_rabbitmq_conf_made_private_when_it_existed_readable(tmp_path: Path) -> None:
    server = RabbitServer(tmp_path / "rabbit", password=SECRET)
    server.base_dir.mkdir()
    conf = server.base_dir / "rabbitmq.conf"
    conf.write_text("old\n")
    conf.chmod(0o644)
    server._write_config()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600


@pytest.mark.parametrize("field", ["password", "user", "vhost"])
def test_a_line_break_cannot_add_lines_to_rabbitmq_conf(tmp_path: Path, field: str) -> None:
    server = RabbitServer(tmp_path / "rabbit")
    setattr(server, field, "x\nloopback_users.guest = false")
    with pytest.raises(ServiceError, match="line break"):
        server._write_config()
    conf = server.base_dir / "rabbitmq.conf"
    assert not conf.exists() or "loopback_users.guest" not in conf.read_text()
