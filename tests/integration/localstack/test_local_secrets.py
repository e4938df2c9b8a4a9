"""A real local PostgreSQL gets a password of any characters without it reaching a command line."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from localstack import servers as local_services
from localstack.servers import PostgresServer, free_port


# ASCII: sent as its SCRAM verifier; not ASCII: as it is (the server normalises it).
@pytest.mark.parametrize("password", ["p'a\\ss/w#o?r@d\"$(x)\nsecond line", "p'âté\nsecond line"])
def test_role_password_of_any_characters_without_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    real_run = subprocess.run
    argvs: list[list[str]] = []

    def spy(cmd: list[str], **kwargs: Any) -> Any:
        argvs.append([str(a) for a in cmd])
        return real_run(cmd, **kwargs)

    monkeypatch.setattr(local_services.subprocess, "run", spy)
    server = PostgresServer(tmp_path / "pg", port=free_port(), password=password, durable=False)
    try:
        server.start()

        async def login() -> int:
            con = await asyncpg.connect(
                host="127.0.0.1", port=server.port, user=server.user,
                password=password, database=server.database,
            )  # fmt: skip
            try:
                return int(await con.fetchval("SELECT 1"))
            finally:
                await con.close()

        assert asyncio.run(login()) == 1
    finally:
        server.stop()
    assert any("psql" in " ".join(argv) for argv in argvs)
    for argv in argvs:
        assert not any("p'a" in arg or "second line" in arg for arg in argv), argv
