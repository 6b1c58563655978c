"""A real Dask cluster for the tests: ``dask scheduler`` and workers as processes on 127.0.0.1
(dashboards on loopback too: --no-dashboard alone still binds every interface), each worker
with its own folder; workers can be killed one by one; everything stopped at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

from skymix.processes import stop_process

DASK = str(Path(sys.executable).with_name("dask"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DaskCluster:
    """A scheduler and ``workers`` single-threaded workers; ``env`` for the workers."""

    root: Path
    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=_free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "ab")
        env = {**os.environ, **self.env}
        self.procs[name] = subprocess.Popen(
            [DASK, *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()

    def start(self) -> None:
        self._spawn(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--dashboard-address", "127.0.0.1:0"],
        )
        for n in range(1, self.workers + 1):
            self.start_worker(f"w{n}")
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(self.workers, timeout=60)

    def start_worker(self, name: str) -> None:
        self._spawn(
            name,
            ["worker", self.address, "--host", "127.0.0.1", "--nthreads", "1"]
            + ["--dashboard-address", "127.0.0.1:0", "--name", name]
            + ["--local-directory", str(self.root / name)],
        )

    def kill_worker(self, name: str) -> None:
        """SIGKILL one worker: what a crashed machine looks like to the scheduler."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            stop_process(proc, f"dask {name}")
            del self.procs[name]
