"""A live ``skymix serve`` for the tests: a real uvicorn process on 127.0.0.1 at a free port,
with its own data folder and secret key, on SQLite or a PostgreSQL database; stopped (or
killed, for the crash tests) by the test, its log kept for grepping secrets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from skymix.processes import stop_process
from skymix.service.crypto import new_key

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """``skymix serve`` in ``data_dir`` on ``database_url``; ``env`` adds variables."""

    data_dir: Path
    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    secret_key: str = field(default_factory=new_key)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "service.log"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SKYMIX_"))}
        env.update(
            {
                "SKYMIX_DATA_DIR": str(self.data_dir),
                "SKYMIX_DATABASE_URL": self.database_url,
                "SKYMIX_SECRET_KEY": self.secret_key,
                "SKYMIX_WORKERS": "1",
                "SKYMIX_JANUS": "off",  # the live-room tests turn it on
            }
        )
        env.update(self.env)
        return env

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``skymix ARGS`` with the service's configuration (e.g. ``apps create``)."""
        return subprocess.run(
            [sys.executable, "-m", "skymix", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.environment(),
        )

    def create_app(self, app_id: str) -> str:
        """A new application; its API key."""
        done = self.command("apps", "create", app_id)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "skymix", "-v", "serve", "--port", str(self.port)],
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skymix serve exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"skymix serve not ready in {READY_TIMEOUT_S} s: {self.log()}")
            time.sleep(0.1)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: a crash, nothing cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None:
            return
        stop_process(self.proc, "skymix serve", 15)
        self.proc = None

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(check: Callable[[], object], what: object, bound_s: float = 60.0) -> None:
    """Poll ``check`` until it is true. The bound is not a speed requirement: it only keeps a
    test whose awaited event never comes from hanging, and the failure then says ``what``."""
    deadline = time.monotonic() + bound_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(0.02)
