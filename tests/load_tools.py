"""A load on a live ``skymix serve``: many concurrent clients (httpx async clients on loopback,
one connection each) creating, reading and updating notification settings and listing
recordings, each request's latency recorded, every answer checked.

Applications are shared: ``clients_per_app`` clients work on each app's one settings document.
Every client keeps its own e-mail address in the document's ``emails`` list (one entry per
client) and changes it read-modify-write with ``If-Match`` (a 409 is the protocol's answer to a
lost race: read again and retry, counted, not an error). An acknowledged write is the client's
address at the version the answer names; every later read must show that address (or a newer
one of its own), and the final read of every document must hold each client's last
acknowledged address: a lost write is any that is not. Anything else than the expected answers
is an error. The recordings listed are rows written before the run (``prepare``).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from service_tools import Service
from skymix.deliver.states import new_recording_id
from skymix.service.apps import create_app
from skymix.service.config import ServiceConfig
from skymix.service.models import RecordingRow, utcnow
from skymix.service.state import ServiceState

SETTINGS = "/rest/recording/notifications"
#: Operations as recorded: their latencies in seconds.
OPERATIONS = ("create", "read", "update", "list")


def prepare(service: Service, apps: int, recordings_per_app: int) -> dict[str, str]:
    """Applications load1..loadN in the service's database, each with recordings in LINK to
    list; app id -> API key."""
    config = ServiceConfig.load(environ=service.environment())
    state = ServiceState.open(config)
    keys = {}
    try:
        for n in range(1, apps + 1):
            app_id = f"load{n}"
            keys[app_id] = create_app(state, app_id)
            now = utcnow()
            with state.db.session() as session:
                for r in range(recordings_per_app):
                    rid = new_recording_id()
                    session.add(
                        RecordingRow(
                            id=rid,
                            app_id=app_id,
                            room=f"room {r % 7}",
                            kind="capture",
                            state="LINK",
                            url=f"https://recordings.example/{rid}.mp4",
                            link_expires_at=now + timedelta(days=1),
                            work_dir=str(config.recordings_dir / app_id / rid),
                            report_summary={"duration_s": 60.0, "participants": ["a", "b"]},
                            created_at=now - timedelta(seconds=r),
                            updated_at=now,
                        )
                    )
    finally:
        state.close()
    return keys


def document(app_id: str) -> dict[str, Any]:
    """The settings every app starts with: storage on AWS (no endpoint to resolve), no
    notification URL (nothing to resolve either)."""
    return {
        "app_id": app_id,
        "storage": {
            "arn": f"arn:aws:s3:us-east-1::load-bucket/{app_id}/",
            "access_key_id": "AKIALOADTEST0000",
            "secret_access_key": "load-test-secret-key-0000000000",
        },
        "notifications": {"enabled": False, "emails": []},
    }


@dataclass
class LoadResult:
    """What a run saw."""

    clients: int
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    conflicts: int = 0

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def percentiles(self) -> dict[str, dict[str, float]]:
        """Per operation: count, p50 and p99 in milliseconds."""
        out = {}
        for op in OPERATIONS:
            values = sorted(self.latencies.get(op, []))
            if not values:
                continue
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            out[op] = {
                "count": float(len(values)),
                "p50_ms": round(cuts[49] * 1000, 1),
                "p99_ms": round(cuts[98] * 1000, 1),
            }
        return out


class _Client:
    """One simulated client: its app, its address in that app's document, its acknowledged
    writes."""

    def __init__(self, n: int, app_id: str, key: str, url: str, result: LoadResult) -> None:
        self.n, self.app_id, self.result = n, app_id, result
        self.rng = random.Random(n)
        self.http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=1),
        )
        self.seq = 0
        self.acked: str | None = None  # this client's last acknowledged address

    def address(self, seq: int) -> str:
        return f"c{self.n}-{seq}@load.example"

    def mine(self, emails: list[str]) -> list[str]:
        return [e for e in emails if e.startswith(f"c{self.n}-")]

    async def timed(self, op: str, method: str, path: str, **kw: Any) -> httpx.Response | None:
        began = time.perf_counter()
        try:
            answer = await self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.result.errors.append(f"{op} {method} {path}: {type(exc).__name__}: {exc}")
            return None
        self.result.latencies[op].append(time.perf_counter() - began)
        return answer

    def error(self, op: str, answer: httpx.Response) -> None:
        self.result.errors.append(f"{op}: {answer.status_code} {answer.text[:200]}")

    async def create(self) -> None:
        """Every client of an app tries to create its settings: one 201, the others 409."""
        answer = await self.timed(
            "create", "POST", SETTINGS, params={"verify": "false"}, json=document(self.app_id)
        )
        if answer is not None and answer.status_code not in (201, 409):
            self.error("create", answer)

    async def read(self) -> dict[str, Any] | None:
        answer = await self.timed("read", "GET", f"{SETTINGS}/{self.app_id}")
        if answer is None:
            return None
        if answer.status_code != 200:
            self.error("read", answer)
            return None
        body: dict[str, Any] = answer.json()
        mine = self.mine(body["notifications"]["emails"])
        if self.acked is not None and self.acked not in mine:
            self.result.lost.append(f"{self.app_id}: {self.acked} not read back: {mine}")
        return body

    async def update(self) -> None:
        """Read, set this client's address, write with If-Match; on 409 read again."""
        self.seq += 1
        for _ in range(50):
            body = await self.read()
            if body is None:
                return
            emails = [e for e in body["notifications"]["emails"] if not self.mine([e])]
            patch = {"notifications": {"emails": [*emails, self.address(self.seq)]}}
            answer = await self.timed(
                "update",
                "PATCH",
                f"{SETTINGS}/{self.app_id}",
                json=patch,
                headers={"If-Match": f'"{body["version"]}"'},
            )
            if answer is None:
                return
            if answer.status_code == 200:
                self.acked = self.address(self.seq)
                return
            if answer.status_code != 409:
                self.error("update", answer)
                return
            self.result.conflicts += 1
            await asyncio.sleep(self.rng.uniform(0, 0.05))
        self.result.errors.append(f"{self.app_id}: client {self.n} never won a write")

    async def list(self) -> None:
        answer = await self.timed(
            "list", "GET", "/rest/recordings", params={"limit": self.rng.choice((10, 20, 50))}
        )
        if answer is None:
            return
        if answer.status_code != 200 or not answer.json()["items"]:
            self.error("list", answer)

    async def run(self, until: float) -> None:
        await self.create()
        while time.monotonic() < until:
            roll = self.rng.random()
            if roll < 0.35:
                await self.read()
            elif roll < 0.65:
                await self.update()
            else:
                await self.list()


async def run_load(
    url: str, keys: dict[str, str], clients: int, seconds: float, clients_per_app: int = 4
) -> LoadResult:
    """``clients`` clients for ``seconds`` against the service at ``url`` (apps from
    ``prepare``, ``clients_per_app`` on each); then every document read back."""
    apps = list(keys.items())
    assert len(apps) * clients_per_app >= clients, "not enough applications"
    result = LoadResult(clients, seconds)
    crowd = [
        _Client(n, *apps[n // clients_per_app], url=url, result=result) for n in range(clients)
    ]
    until = time.monotonic() + seconds
    try:
        await asyncio.gather(*(c.run(until) for c in crowd))
        for c in crowd:
            await c.read()  # the final read: each client's last acknowledged address is there
    finally:
        await asyncio.gather(*(c.http.aclose() for c in crowd))
    return result
