"""RabbitMQ and PostgreSQL for development and tests, from the system's binaries.

``chouette services up|down|status`` uses :func:`up`, :func:`down` and :func:`status`;
the test suite starts private instances on free ports with the same classes.

Both servers listen on 127.0.0.1 only and keep their data under one directory
(``.chouette/`` by default). Users, passwords, database, vhost and ports are read from
``DATABASE_URL`` and ``AMQP_URL``, so the servers always match the configuration.
PostgreSQL refuses to run as root and RabbitMQ's files must belong to ``rabbitmq``:
as root, each server runs as its own system user.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg

from shared import db
from shared.broker import declare_topology_as, permissions
from shared.privileges import CLI, GROUP_ROLES, READER
from shared.settings import Settings, TrainerSettings, consumer_timeout_ms

logger = logging.getLogger(__name__)
T = TypeVar("T")

PG_BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14", "13")]
RABBIT_BIN_DIR = Path("/usr/lib/rabbitmq/bin")


class ServiceError(RuntimeError):
    """A local server could not be installed, started or reached."""


def _is_root() -> bool:
    return os.geteuid() == 0


def _as_user(user: str) -> list[str]:
    """Prefix a command so it runs as ``user`` when we are root."""
    if not _is_root():
        return []
    return ["runuser", "-u", user, "--"]


def _chown(path: Path, user: str) -> None:
    if _is_root():
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion, also when called from a thread with a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(lambda: asyncio.run(make())).result()


def _make_reachable(path: Path) -> None:
    """As root, let the server's own user traverse the parents of its data directory."""
    if not _is_root():
        return
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def _apt_install(packages: list[str]) -> None:
    if not (_is_root() and shutil.which("apt-get")):
        raise ServiceError(
            f"missing {', '.join(packages)}: install with "
            f"`sudo apt-get install -y {' '.join(packages)}`"
        )
    logger.info("installing %s with apt-get", " ".join(packages))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )


def pg_bin(name: str) -> str:
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found:
        return found
    raise ServiceError(f"PostgreSQL binary {name!r} not found")


def ensure_binaries() -> None:
    """Install the Debian packages when run as root and they are missing."""
    missing = []
    try:
        pg_bin("initdb")
    except ServiceError:
        missing.append("postgresql")
    if not (RABBIT_BIN_DIR / "rabbitmq-server").exists():
        missing.append("rabbitmq-server")
    if missing:
        _apt_install(missing)


# Debian's browser and its driver, for the results page's browser test
# (tests/integration/api/test_page.py, which fails without them rather than skipping).
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def ensure_browser() -> None:
    """Install ``chromium`` and ``chromium-driver`` when run as root and they are missing
    (``make test``); otherwise say how."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _apt_install(["chromium", "chromium-driver"])


def _psql_quote(value: str) -> str:
    """A psql meta-command argument holding exactly ``value`` (quotes, backslashes and
    newlines included): single-quoted, ``'`` doubled, ``\\`` and line breaks escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (what ``pg_authid`` stores), or
    ``""`` for a password that is not pure ASCII: the server normalises those (SASLprep)
    before hashing, which this does not reproduce; they are then sent as they are."""
    if not password.isascii():
        return ""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# -- PostgreSQL ------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    data_dir: Path
    port: int = 5432
    user: str = "chouette"
    password: str = field(default="chouette", repr=False)
    database: str = "chouette"
    superuser: bool = False  # the test suite's role creates databases and extensions
    durable: bool = True  # tests turn fsync off: faster, and their data is thrown away
    # Login roles of the processes that do not connect as ``user``: (name, password, the
    # group role of shared.privileges it is a member of).
    logins: list[tuple[str, str, str]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    @classmethod
    def from_url(cls, url: str, home: Path) -> PostgresServer:
        parts = urlsplit(url)
        return cls(
            data_dir=home / "postgres",
            port=parts.port or 5432,
            user=unquote(parts.username or "chouette"),
            password=unquote(parts.password or ""),
            database=(parts.path or "/chouette").lstrip("/") or "chouette",
        )

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def _socket_dir(self) -> Path:
        return self.data_dir / "run"

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_as_user("postgres"), *cmd], check=True, capture_output=True, text=True
        )

    def _psql(self, sql: str, *, dbname: str = "postgres", **variables: str) -> str:
        """Run SQL as the superuser; values go in as psql variables (:'v' literal, :"v" name).

        The variables are set by ``\\set`` lines on standard input, never on the command
        line: a password there would be visible to every user in ``ps`` and would appear in
        the ``CalledProcessError`` that ``chouette services up`` prints.
        """
        script = "".join(f"\\set {k} {_psql_quote(v)}\n" for k, v in variables.items())
        out = subprocess.run(
            [*_as_user("postgres"), pg_bin("psql"), "-h", str(self._socket_dir),
             "-p", str(self.port), "-U", "postgres", "-d", dbname, "-v", "ON_ERROR_STOP=1",
             "-tA"],
            input=script + sql, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return out.stdout.strip()

    def start(self) -> None:
        if self.healthy():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _make_reachable(self.data_dir)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            _chown(self.data_dir, "postgres")
            self._run(
                pg_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                "--no-instructions",
            )  # fmt: skip
        self._socket_dir.mkdir(exist_ok=True)
        _chown(self._socket_dir, "postgres")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._socket_dir}"
            " -c max_connections=200 -c shared_buffers=128MB"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            self._run(
                pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
                "-o", options, "-w", "-t", "60", "start",
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            log = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
            raise ServiceError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from exc
        self._ensure_role_and_database()

    def _ensure_role_and_database(self) -> None:
        # The server stores a SCRAM verifier; computed here, the password itself never
        # reaches the server (its logs, pg_stat_activity) nor psql.
        secret = scram_verifier(self.password) or self.password
        names = {"user": self.user, "password": secret, "database": self.database}
        exists = self._psql("SELECT 1 FROM pg_roles WHERE rolname = :'user';", **names)
        verb = "ALTER" if exists else "CREATE"
        # CREATEROLE: its migrations create the group roles of shared.privileges.
        power = "SUPERUSER" if self.superuser else "CREATEDB CREATEROLE"
        self._psql(f"{verb} ROLE :\"user\" LOGIN PASSWORD :'password' {power};", **names)
        if not self._psql("SELECT 1 FROM pg_database WHERE datname = :'database';", **names):
            self._psql('CREATE DATABASE :"database" OWNER :"user";', **names)
        self.ensure_logins()

    def ensure_logins(self) -> None:
        """Create (or update) each process's login role, NOSUPERUSER NOCREATEDB
        NOCREATEROLE, and make it a member of its group role (created NOLOGIN if missing)."""
        for login, password, group in self.logins:
            if group not in GROUP_ROLES:
                raise ServiceError(f"unknown group role {group!r} for {login!r}")
            if login == self.user:
                continue
            secret = scram_verifier(password) or password
            names = {"login": login, "password": secret, "group": group}
            if not self._psql("SELECT 1 FROM pg_roles WHERE rolname = :'group';", **names):
                self._psql('CREATE ROLE :"group" NOLOGIN;', **names)
            exists = self._psql("SELECT 1 FROM pg_roles WHERE rolname = :'login';", **names)
            verb = "ALTER" if exists else "CREATE"
            self._psql(
                f"{verb} ROLE :\"login\" LOGIN PASSWORD :'password'"
                " NOSUPERUSER NOCREATEDB NOCREATEROLE;",
                **names,
            )
            self._psql('GRANT :"group" TO :"login";', **names)
            if group == CLI:  # the CLI reads what the reader reads (shared.privileges)
                if not self._psql("SELECT 1 FROM pg_roles WHERE rolname = :'r';", r=READER):
                    self._psql('CREATE ROLE :"r" NOLOGIN;', r=READER)
                self._psql('GRANT :"r" TO :"c";', r=READER, c=CLI)

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def healthy(self) -> bool:

        async def check() -> bool:
            con = await asyncpg.connect(self.url, timeout=3)
            try:
                return bool(await con.fetchval("SELECT 1") == 1)
            finally:
                await con.close()

        if not port_open(self.port):
            return False
        try:
            return _run_sync(check)
        except Exception:
            return False


# -- RabbitMQ --------------------------------------------------------------------------------


@dataclass
class RabbitServer:
    base_dir: Path
    port: int = 5672
    user: str = "chouette"
    password: str = field(default="chouette", repr=False)
    vhost: str = "/"
    consumer_timeout_ms: int = 7 * 3600 * 1000
    # How often a channel checks its consumers' timeouts (RabbitMQ's default: a minute).
    channel_tick_ms: int | None = None
    # Users of least privilege: (name, password, process of shared.broker.permissions),
    # with permissions on the exchanges and queues of the namespaces matching
    # ``namespace_pattern`` (a regular expression). Loaded at boot from a definitions file.
    users: list[tuple[str, str, str]] = field(default_factory=list, repr=False)
    namespace_pattern: str = "chouette"
    # The management plugin's HTTP API on 127.0.0.1 at this port (None: not enabled), for
    # the test of `chouette migrate` creating users through it (compose's broker has it).
    management_port: int | None = None
    last_error: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()

    @classmethod
    def from_url(cls, url: str, home: Path, consumer_timeout: int) -> RabbitServer:
        parts = urlsplit(url)
        return cls(
            base_dir=home / "rabbitmq",
            port=parts.port or 5672,
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(parts.path[1:]) if parts.path not in ("", "/") else "/",
            consumer_timeout_ms=consumer_timeout,
        )

    @property
    def url(self) -> str:
        vhost = "" if self.vhost == "/" else self.vhost
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}/{vhost}"

    # Distribution and epmd ports derive from the AMQP port so instances never collide.
    @property
    def dist_port(self) -> int:
        return 20000 + self.port if self.port < 45000 else self.port - 20000

    @property
    def epmd_port(self) -> int:
        return self.dist_port + 1

    @property
    def nodename(self) -> str:
        return f"chouette{self.port}@localhost"

    def _env(self) -> dict[str, str]:
        base = self.base_dir.resolve()
        return {
            "PATH": f"{RABBIT_BIN_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(base),  # the Erlang cookie lives here, private to this instance
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_LOGS": str(base / "log" / "rabbit.log"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _write_config(self) -> None:
        base = self.base_dir
        for sub in ("mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        _make_reachable(base)
        for name, value in (("user", self.user), ("password", self.password),
                            ("vhost", self.vhost)):  # fmt: skip
            if "\n" in value or "\r" in value:  # would add lines to rabbitmq.conf
                raise ServiceError(f"the RabbitMQ {name} in AMQP_URL contains a line break")
        _write_private(
            base / "rabbitmq.conf",
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{self.port}",
                    f"default_user = {self.user}",
                    f"default_pass = {self.password}",
                    f"default_vhost = {self.vhost}",
                    "default_permissions.configure = .*",
                    "default_permissions.read = .*",
                    "default_permissions.write = .*",
                    "loopback_users = none",
                    # Above the trainer's hard time limit: a long training is not a stuck consumer.
                    f"consumer_timeout = {self.consumer_timeout_ms}",
                    "disk_free_limit.absolute = 50MB",
                    "log.console = false",
                    "log.file.level = warning",
                    *self._definitions(),
                    *self._management(),
                    "",
                ]
            ),
        )
        plugins = "rabbitmq_management" if self.management_port is not None else ""
        (base / "enabled_plugins").write_text(f"[{plugins}].\n")
        advanced = "[]"
        if self.channel_tick_ms is not None:
            advanced = f"[{{rabbit, [{{channel_tick_interval, {self.channel_tick_ms}}}]}}]"
        (base / "advanced.config").write_text(f"{advanced}.\n")
        _chown(base, "rabbitmq")

    def _management(self) -> list[str]:
        if self.management_port is None:
            return []
        return [
            f"management.tcp.port = {self.management_port}",
            "management.tcp.ip = 127.0.0.1",
        ]

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def _definitions(self) -> list[str]:
        """With ``users``, write the definitions file that creates them at boot (mode 0600,
        password hashes only) and return the rabbitmq.conf line that loads it. It defines
        the administrator too: a node that loads definitions creates no default user."""
        if not self.users:
            return []

        def user(name: str, password: str, tags: list[str]) -> dict[str, Any]:
            return {
                "name": name,
                "password_hash": rabbit_password_hash(password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": tags,
            }

        def grant(name: str, configure: str, write: str, read: str) -> dict[str, str]:
            return {"user": name, "vhost": self.vhost, "configure": configure,
                    "write": write, "read": read}  # fmt: skip

        users = [user(self.user, self.password, ["administrator"])]
        perms = [grant(self.user, ".*", ".*", ".*")]
        for name, password, process in self.users:
            if name != self.user:
                users.append(user(name, password, []))
                perms.append(grant(name, *permissions(process, self.namespace_pattern)))
        path = self.base_dir / "definitions.json"
        definitions = {"users": users, "vhosts": [{"name": self.vhost}], "permissions": perms}
        _write_private(path, json.dumps(definitions, indent=1))
        return [f"load_definitions = {path}"]

    def start(self, timeout: float = 90.0) -> None:
        if self.healthy():
            return
        self._write_config()
        log = open(self.base_dir / "log" / "startup.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [*_as_user("rabbitmq"), str(RABBIT_BIN_DIR / "rabbitmq-server")],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.base_dir,
        )
        log.close()
        (self.base_dir / "server.pgid").write_text(str(proc.pid))
        self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"RabbitMQ exited with {proc.returncode}:\n{self._log_tail()}")
            if self.healthy() and (self.management_port is None or port_open(self.management_port)):
                return
            time.sleep(0.5)
        self.stop()
        raise ServiceError(
            f"RabbitMQ did not become healthy in {timeout:.0f}s ({self.last_error}):\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        texts = []
        for path in (self.base_dir / "log").glob("*.log"):
            texts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(texts)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server started from this ``base_dir``; one started elsewhere is left alone
        (its epmd too)."""
        pgid_file = self.base_dir / "server.pgid"
        if not pgid_file.exists():
            return
        pgid = int(pgid_file.read_text())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        proc: subprocess.Popen[bytes] | None = getattr(self, "_proc", None)
        if proc is not None:  # started by this process: reap it, or it lingers as a zombie
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pgid_alive(pgid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        pgid_file.unlink(missing_ok=True)
        # epmd daemonizes out of our process group; stop the private one we started.
        with contextlib.suppress(Exception):
            subprocess.run(
                ["epmd", "-port", str(self.epmd_port), "-kill"],
                capture_output=True,
                timeout=5,
                env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)},
            )

    def healthy(self) -> bool:
        """An AMQP connection with the configured credentials is the health check."""
        if not port_open(self.port):
            return False

        async def check() -> bool:
            connection = await aio_pika.connect(self.url, timeout=3)
            await connection.close()
            return True

        try:
            return _run_sync(check)
        except Exception as exc:
            self.last_error = repr(exc)
            return False


def rabbit_password_hash(password: str, *, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256`` hash of ``password``: base64 of a
    4-byte salt followed by sha256(salt + password). The definitions file holds only this."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _write_private(path: Path, text: str) -> None:
    """Write a file that holds a secret: mode 0600 from its creation (and before any byte of
    it is written when it already existed), never readable by others in between."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as out:
            out.write(text)
    finally:
        os.close(fd)


def _pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# -- the `chouette services` commands --------------------------------------------------------


# The group role (shared.privileges) of each process's DATABASE_URL override.
PROCESS_GROUPS = {
    "fetcher": "chouette_fetcher",
    "trainer": "chouette_trainer",
    "evaluator": "chouette_evaluator",
    "api": "chouette_reader",
    "reader": "chouette_reader",
    "cli": "chouette_cli",
}


def database_logins(settings: Settings, owner: str) -> list[tuple[str, str, str]]:
    """(login, password, group) of every process whose URL names a role other than the
    schema's ``owner`` (the migration role)."""
    logins = []
    for process, group in PROCESS_GROUPS.items():
        own = getattr(settings, f"{process}_database_url")
        if not own.get_secret_value():
            continue
        parts = urlsplit(own.get_secret_value())
        login = unquote(parts.username or "")
        if login and login != owner:
            logins.append((login, unquote(parts.password or ""), group))
    return logins


def broker_users(settings: Settings, admin: str) -> list[tuple[str, str, str]]:
    """(user, password, process) of every process whose AMQP URL names a user other than
    the ``admin`` (``MIGRATE_AMQP_URL``'s, else ``AMQP_URL``'s)."""
    users = []
    for process in ("fetcher", "trainer", "evaluator", "cli"):
        own = getattr(settings, f"{process}_amqp_url").get_secret_value()
        if not own:
            continue
        parts = urlsplit(own)
        user = unquote(parts.username or "")
        if user and user != admin:
            users.append((user, unquote(parts.password or ""), process))
    return users


def servers(settings: Settings) -> tuple[RabbitServer, PostgresServer]:
    home = settings.chouette_home
    rabbit = RabbitServer.from_url(
        settings.amqp_url_for("migrate").get_secret_value(),
        home,
        consumer_timeout_ms(TrainerSettings()),
    )
    rabbit.users = broker_users(settings, rabbit.user)
    rabbit.namespace_pattern = re.escape(settings.broker_namespace)
    # The migration role owns the database; the other processes get login roles.
    postgres = PostgresServer.from_url(
        settings.database_url_for("migrate").get_secret_value(), home
    )
    postgres.logins = database_logins(settings, postgres.user)
    return rabbit, postgres


def up(settings: Settings) -> list[str]:
    """Start both servers (harmless when they already run), then apply the migrations and
    the grants (``chouette migrate``); return the migrations applied now."""
    ensure_binaries()
    rabbit, postgres = servers(settings)
    applied = start_postgres(postgres)
    rabbit.start()
    # Users of least privilege may not declare the exchanges and queues: the admin does.
    _run_sync(
        lambda: declare_topology_as(
            rabbit.url,
            namespace=settings.broker_namespace,
            delivery_limit=settings.broker_delivery_limit,
        )
    )
    return applied


def start_postgres(postgres: PostgresServer) -> list[str]:
    """Start PostgreSQL, create the processes' login roles, apply the migrations and the
    grants as the owner (``chouette migrate``); return the migrations applied now."""
    postgres.start()
    postgres.ensure_logins()  # also when the server was already running
    return _run_sync(lambda: db.migrate_at(postgres.url, grants=True))


def down(settings: Settings) -> None:
    rabbit, postgres = servers(settings)
    rabbit.stop()
    postgres.stop()


def status(settings: Settings) -> dict[str, bool]:
    rabbit, postgres = servers(settings)
    return {"rabbitmq": rabbit.healthy(), "postgresql": postgres.healthy()}
