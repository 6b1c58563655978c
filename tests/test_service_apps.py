"""Applications and their keys against a live ``skymix serve`` on SQLite and PostgreSQL: the key
printed once and stored hashed, one identical 401 for every kind of bad key, rotation ending the
old key, deletion taking the settings with it, failed attempts limited per client address."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from postgres import Postgres
from service_tools import Service
from skymix.errors import OptionsError
from skymix.service import apps
from skymix.service.auth import hash_secret, new_key, parse_key
from skymix.service.config import ServiceConfig
from skymix.service.db import Database
from skymix.service.state import ServiceState

SETTINGS = "/rest/recording/notifications"
_NAMES = itertools.count(1)


def database_for(request: pytest.FixtureRequest, folder: Path) -> str:
    """An empty database of the kind the module's parameter names."""
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'skymix.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database(f"apps{next(_NAMES)}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One service per database for the module (the tests use distinct application ids)."""
    folder = tmp_path_factory.mktemp("apps")
    with Service(folder / "data", database_for(request, folder)) as running:
        yield running


def from_address(service: Service, address: str, key: str | None = None) -> httpx.Client:
    """A client whose connections come from ``address`` (another loopback address: the rate
    limit counts per client address)."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=service.url, headers=headers, transport=transport, timeout=30)


@contextmanager
def opened(service: Service) -> Iterator[ServiceState]:
    """The service's state in this process (its database and keys), for library calls."""
    state = ServiceState.open(ServiceConfig.load(environ=service.environment()))
    try:
        yield state
    finally:
        state.close()


def rows(service: Service, query: str) -> list[tuple[object, ...]]:
    db = Database(service.database_url)
    try:
        with db.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        db.close()


def test_create_prints_the_key_once_and_stores_only_its_hash(service: Service) -> None:
    done = service.command("apps", "create", "acme-1")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    match = re.fullmatch(r"skm_([a-z2-7]{12})_([A-Za-z0-9_-]{43})", key)
    assert match is not None
    stored = rows(service, "SELECT app_id, key_id, key_hash FROM apps WHERE app_id = 'acme-1'")
    assert stored[0][1] == match.group(1)
    assert match.group(2) not in repr(stored) and key not in repr(stored)
    with service.client(key) as client:
        answer = client.get(f"{SETTINGS}/acme-1")
        assert answer.status_code == 404  # authenticated; no settings yet
    again = service.command("apps", "create", "acme-1")
    assert again.returncode == 1
    assert "acme-1 exists already" in again.stderr and "skm_" not in again.stdout
    refused = service.command("apps", "create", "../etc")
    assert refused.returncode == 1
    assert "app_id" in refused.stderr and "skm_" not in refused.stdout
    with opened(service) as state:
        for bad in ("a/b", "_x", ".x", "", "x" * 129, "caf\u00e9", "nul\x00"):
            with pytest.raises(OptionsError, match="app_id"):
                apps.create_app(state, bad)
    assert key not in service.log() and match.group(2) not in service.log()


def test_every_bad_key_gets_the_same_401(service: Service) -> None:
    key = service.create_app("acme-2")
    key_id, secret = key.removeprefix("skm_").split("_", 1)
    tampered = f"skm_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    other_id = "a" * 12 if key_id != "a" * 12 else "b" * 12
    headers: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": f"Basic {key}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {key}x"},
        {"Authorization": f"Bearer skm_{other_id}_{secret}"},
        {"Authorization": f"Bearer {tampered}"},
    ]
    answers = []
    with from_address(service, "127.0.0.6") as client:
        for header in headers:
            answer = client.get(f"{SETTINGS}/acme-2", headers=header)
            assert answer.status_code == 401, header
            assert answer.headers["www-authenticate"] == "Bearer"
            answers.append(answer.content)
        assert (
            client.get(f"{SETTINGS}/acme-2", headers={"Authorization": f"Bearer {key}"}).status_code
            == 404
        )
    assert len(set(answers)) == 1
    assert b"key" in answers[0] and key_id.encode() not in answers[0]


def test_rotate_key_ends_the_old_key_and_delete_takes_the_settings(service: Service) -> None:
    old = service.create_app("acme-3")
    rotated = service.command("apps", "rotate-key", "acme-3")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new.startswith("skm_") and new != old
    with service.client(old) as client:
        assert client.get(f"{SETTINGS}/acme-3").status_code == 401
    with service.client(new) as client:
        created = client.post(SETTINGS, json={"app_id": "acme-3", "recording_enabled": False})
        assert created.status_code == 201, created.text
    assert rows(service, "SELECT app_id FROM app_settings WHERE app_id = 'acme-3'") == [("acme-3",)]
    with opened(service) as state, pytest.raises(OptionsError, match="no application nobody"):
        apps.rotate_key(state, "nobody")

    deleted = service.command("apps", "delete", "acme-3")
    assert deleted.returncode == 0, deleted.stderr
    assert rows(service, "SELECT app_id FROM app_settings WHERE app_id = 'acme-3'") == []
    assert rows(service, "SELECT app_id FROM apps WHERE app_id = 'acme-3'") == []
    with service.client(new) as client:
        assert client.get(f"{SETTINGS}/acme-3").status_code == 401
    with opened(service) as state:
        with pytest.raises(OptionsError, match="no application acme-3"):
            apps.delete_app(state, "acme-3")
        assert apps.create_app(state, "acme-3").startswith("skm_")  # the id is free again


def test_failed_attempts_are_limited_per_client_address(service: Service) -> None:
    key = service.create_app("acme-4")
    with from_address(service, "127.0.0.5") as client:
        for n in range(20):  # auth_failures_per_minute's default
            answer = client.get(f"{SETTINGS}/acme-4", headers={"Authorization": f"Bearer bad{n}"})
            assert answer.status_code == 401
        limited = client.get(f"{SETTINGS}/acme-4", headers={"Authorization": "Bearer bad"})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # a valid key still gets in: the applications behind a shared address (a proxy, NAT)
        # are not locked out by someone else's guesses
        right = client.get(f"{SETTINGS}/acme-4", headers={"Authorization": f"Bearer {key}"})
        assert right.status_code == 404
        again = client.get(f"{SETTINGS}/acme-4", headers={"Authorization": "Bearer bad"})
        assert again.status_code == 429
    with from_address(service, "127.0.0.1", key) as client:  # another address is not limited
        assert client.get(f"{SETTINGS}/acme-4").status_code == 404


def test_keys_have_their_shape_and_only_their_secret_hash_is_kept() -> None:
    made = {new_key() for _ in range(50)}
    assert len({key.token for key in made}) == 50 and len({key.key_id for key in made}) == 50
    for key in made:
        parsed = parse_key(key.token)
        assert parsed is not None and parsed[0] == key.key_id
        assert hash_secret(parsed[1]) == key.secret_hash and parsed[1] not in repr(key)
    token = next(iter(made)).token
    for bad in (token + "A", token[:-1], token.replace("skm_", "skx_"), token.upper(), ""):
        assert parse_key(bad) is None
