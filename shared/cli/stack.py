"""The simulator and the three services as subprocesses (demo, benchmark, end-to-end tests).

Services are started by module name (``python -m services.NAME``), so ``shared/`` still
imports no service. Each one logs to its own file; a service is ready when its log says
``NAME ready`` (``shared.runtime.serve``), the simulator when its port answers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("fetcher", "trainer", "evaluator")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def pipeline_env(
    *,
    amqp_url: str,
    database_url: str,
    namespace: str,
    simulator_port: int | None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every process of one pipeline. With ``simulator_port``, the
    services use the local simulator and never credentials from a ``.env``."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AMQP_URL": amqp_url,
            "DATABASE_URL": database_url,
            "BROKER_NAMESPACE": namespace,
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    if simulator_port is not None:
        env.update(
            {
                "CHOUETTE_API_URL": f"http://127.0.0.1:{simulator_port}",
                "CHOUETTE_USERNAME": "",
                "CHOUETTE_PASSWORD": "",
                "SIMULATOR_HOST": "127.0.0.1",
                "SIMULATOR_PORT": str(simulator_port),
                "SIMULATOR_USERNAME": "",
                "SIMULATOR_PASSWORD": "",
            }
        )
    return env


@dataclass
class Stack:
    """Started processes of one pipeline; stop them with :meth:`stop` (SIGTERM, then kill)."""

    env: dict[str, str]
    logdir: Path
    processes: dict[str, Process] = field(default_factory=dict)

    def start(self, names: Iterable[str]) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        for name in names:
            log = self.logdir / f"{name}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"],
                    cwd=ROOT,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C meant for us does not hit them first
                )
            self.processes[name] = Process(name, popen, log)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        pending = dict(self.processes)
        while pending:
            for name, process in list(pending.items()):
                if process.popen.poll() is not None:
                    raise RuntimeError(f"{name} exited at start-up:\n{process.tail()}")
                if self._ready(process):
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not ready after {timeout_s:.0f}s: {', '.join(pending)}\n"
                    + "\n".join(p.tail(20) for p in pending.values())
                )
            time.sleep(0.2)

    def _ready(self, process: Process) -> bool:
        if process.name == "simulator":
            return port_open(int(self.env.get("SIMULATOR_PORT", "8081")))
        try:
            return f"{process.name} ready" in process.log.read_text(errors="replace")
        except OSError:
            return False

    def dead(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.popen.poll() is not None]

    def log_tails(self, lines: int = 60) -> str:
        return "\n\n".join(
            f"--- {p.name} (exit {p.popen.poll()}) ---\n{p.tail(lines)}"
            for p in self.processes.values()
        )

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM everything (services finish or abandon their message), newest first."""
        for process in reversed(self.processes.values()):
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                codes[process.name] = process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                codes[process.name] = process.popen.wait(5)
        return codes
