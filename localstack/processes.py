"""The simulator and the three services as subprocesses (demo, benchmarks, e2e and fault tests).

Services are started by module name (``python -m services.NAME``), so ``localstack`` still
imports no service. Each process logs to its own file, named by its key (the service's
name, or e.g. ``trainer2`` for a second trainer); a process started again under the same
key appends to that file. A service is ready when its output says ``NAME ready``
(``shared.runtime.serve``), the simulator when its port answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from localstack.servers import port_open

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("fetcher", "trainer", "evaluator")


@dataclass
class Process:
    name: str  # the key: "trainer", "trainer2"...
    service: str  # the module under services/
    popen: subprocess.Popen[bytes]
    log: Path
    offset: int = 0  # where this run's output starts in the log

    def text(self) -> str:
        """The whole log (earlier runs under the same key included)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def output(self) -> str:
        """This run's output only."""
        try:
            with self.log.open("rb") as f:
                f.seek(self.offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 60) -> str:
        text = self.text()
        return "\n".join(text.splitlines()[-lines:]) if text else "(no log)"


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
        for name in names:
            self.launch(name)

    def launch(
        self, service: str, key: str | None = None, env: Mapping[str, str] | None = None
    ) -> Process:
        """Start ``services.<service>`` as ``key`` (default: its name), ``env`` added."""
        key = key or service
        previous = self.processes.get(key)
        if previous is not None and previous.popen.poll() is None:
            raise RuntimeError(f"{key} is already running")
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = self.logdir / f"{key}.log"
        with log.open("ab" if previous else "wb") as out:
            offset = out.tell()  # before the child shares (and moves) the file position
            popen = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"],
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C meant for us does not hit them first
            )
        process = Process(key, service, popen, log, offset)
        self.processes[key] = process
        return process

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
        if process.service == "simulator":
            return port_open(int(self.env.get("SIMULATOR_PORT", "8081")))
        return f"{process.service} ready" in process.output()

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
