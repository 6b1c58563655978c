"""``skymix serve`` as a process: it starts with no set-up on 127.0.0.1, migrates its database,
answers /healthz and /openapi.json, and refuses bodies over its limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx

from service_tools import Service
from skymix.service.config import ServiceConfig
from skymix.service.crypto import SecretBox, new_key
from skymix.service.models import App, AppSettings
from skymix.service.state import ServiceState


def test_serve_answers_on_loopback_and_refuses_big_bodies(
    database_url: str, tmp_path: Path
) -> None:
    with Service(tmp_path / "data", database_url) as service:
        with service.client() as client:
            health = client.get("/healthz")
            assert health.status_code == 200
            assert health.json()["database"] in ("sqlite", "postgresql")
            spec = client.get("/openapi.json").json()
            assert spec["info"]["title"] == "skymix recording service"
            big = client.post("/healthz", content=b"x" * (2 << 20))
            assert big.status_code == 413
        # bound to 127.0.0.1 only: the machine's other addresses do not answer
        with open("/proc/net/tcp") as table:
            listening = [line.split()[1] for line in table if line.split()[3] == "0A"]
        assert f"0100007F:{service.port:04X}" in listening
        assert f"00000000:{service.port:04X}" not in listening
    assert "Traceback" not in service.log()


def test_the_embedded_default_needs_no_set_up(tmp_path: Path) -> None:
    service = Service(tmp_path / "data", "")
    service.env = {"SKYMIX_SECRET_KEY": "", "SKYMIX_DATABASE_URL": ""}
    with service:
        assert httpx.get(f"{service.url}/healthz").json()["database"] == "sqlite"
    assert (tmp_path / "data" / "skymix.db").is_file()
    assert (tmp_path / "data" / "secret.key").is_file()


def test_metrics_count_requests_by_route_and_read_jobs_from_the_database(tmp_path: Path) -> None:
    with Service(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'm.db'}") as service:
        with service.client() as client:
            before = healthz_count(client.get("/metrics").text)
            for _ in range(3):
                assert client.get("/healthz").status_code == 200
            assert client.get("/no/such/route").status_code == 404
            text = client.get("/metrics").text
    assert healthz_count(text) == before + 3
    assert 'skymix_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'skymix_job_duration_seconds_bucket{le="+Inf"} 0.0' in text
    assert "# TYPE skymix_jobs gauge" in text


def healthz_count(metrics: str) -> float:
    """The counter of answered GET /healthz in a scrape (the readiness polls count too)."""
    line = 'skymix_http_requests_total{method="GET",route="/healthz",status="200"} '
    (value,) = [row.removeprefix(line) for row in metrics.splitlines() if row.startswith(line)]
    return float(value)


def test_rotate_secrets_moves_every_stored_secret_to_the_new_key(tmp_path: Path) -> None:
    service = Service(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'r.db'}")
    old, new = service.secret_key, new_key()
    config = ServiceConfig.load(environ=service.environment())
    state = ServiceState.open(config)
    try:
        with state.db.session() as session:
            session.add(App(app_id="acme", key_id="k1", key_hash="0" * 64))
            session.flush()
            session.add(
                AppSettings(
                    app_id="acme", document_enc=state.box.encrypt("whsec_x"), recording_enabled=True
                )
            )
    finally:
        state.close()
    service.env["SKYMIX_SECRET_KEY"] = f"{new},{old}"
    done = service.command("serve", "--rotate-secrets")
    assert done.returncode == 0, done.stderr
    assert "1 applications" in done.stdout
    assert old not in done.stdout + done.stderr and new not in done.stdout + done.stderr
    only_new = ServiceState.open(ServiceConfig.load(environ={**service.environment()}))
    try:
        with only_new.db.session() as session:
            row = session.get(AppSettings, "acme")
            assert row is not None
            assert SecretBox([new]).decrypt(row.document_enc) == "whsec_x"
    finally:
        only_new.close()


def test_text_that_is_not_unicode_gets_422_not_500(tmp_path: Path) -> None:
    """A lone surrogate ("\\ud800", valid JSON, not Unicode) in a body: FastAPI's own answer
    could not encode it back and the connection died or a 500 came."""
    with Service(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 's.db'}") as service:
        key = service.create_app("acme")
        with service.client(key) as client:
            for path, body in (
                ("/rest/recordings", b'{"room": "\\ud800", "captures": ["a.pcap"]}'),
                ("/rest/recording/notifications", b'{"app_id": "\\ud800"}'),
                (
                    "/rest/recording/notifications",
                    b'{"app_id": "acme", "notifications": {"emails": ["\\ud800@x.com"]}}',
                ),
            ):
                answer = client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                assert answer.status_code == 422, answer.text
                assert answer.json()["detail"][0]["loc"][0] == "body"
    assert "Traceback" not in service.log()


def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(tmp_path: Path) -> None:
    """Without Content-Length the body is counted as it comes: 413 once past the limit, the
    service never holding it whole (it did: 400 MiB sent took its memory from 141 to 910 MB)."""
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        block = b"x" * (1 << 16)
        while sent < 256 << 20:
            sent += len(block)
            yield block

    with Service(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'c.db'}") as service:
        assert service.proc is not None
        before = resident_mb(service.proc.pid)
        try:
            with service.client() as client:
                answer = client.post(
                    "/rest/recordings", content=chunks(), headers={"content-type": "text/plain"}
                )
            assert answer.status_code == 413
        except httpx.TransportError:
            pass  # the service answered and closed while the client was still sending
        assert resident_mb(service.proc.pid) < before + 64
        assert httpx.get(f"{service.url}/healthz").status_code == 200


def resident_mb(pid: int) -> float:
    """A process's resident memory (MB), from /proc."""
    with open(f"/proc/{pid}/status") as status:
        (line,) = [row for row in status if row.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024
