"""The live rooms' browser API against a live ``skymix serve`` and a real WebSocket client: the
public key and its allowed origins (created, read, rotated, revoked), room tokens bound to their
room and expiring, the application's secret key refused on the socket, the signalling protocol's
errors and close codes, and no browser credential in the service's log."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import IntegrityError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from live_tools import store_settings
from service_tools import Service
from skymix.errors import OptionsError
from skymix.relay.janus import janus_available
from skymix.service import apps
from skymix.service.config import ServiceConfig
from skymix.service.crypto import SecretBox, new_key
from skymix.service.live import access
from skymix.service.live.ws import HELLO_TIMEOUT_S, MAX_WAITING
from skymix.service.models import BrowserAccess
from skymix.service.state import ServiceState

ACCESS = "/rest/live/access"
TOKENS = "/rest/live/tokens"
PAGE = "https://app.example.com"
RECV_S = 10.0
#: Settings that let a recording start (its job's upload is no part of these tests).
STORAGE = {
    "storage": {
        "arn": "s3://recordings/live",
        "access_key_id": "AKIDEXAMPLE00001",
        "secret_access_key": "an-example-secret-key-0000",
        "endpoint_url": "http://127.0.0.1:9/",
    }
}
_ADDRESSES = itertools.count()


@dataclass
class Live:
    """The module's service (no Janus), its state in this process (to make applications
    without a command's start-up), and a page that never says hello."""

    service: Service
    state: ServiceState
    silent: ClientConnection

    def new_app(self, app_id: str) -> str:
        """A new application; its secret key."""
        return apps.create_app(self.state, app_id)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("live-api")
    with Service(folder / "data", f"sqlite:///{folder / 'skymix.db'}") as service:
        state = ServiceState.open(ServiceConfig.load(environ=service.environment()), migrate=False)
        try:
            with open_page(service) as silent:
                yield Live(service, state, silent)
        finally:
            state.close()


@pytest.fixture
def service(live: Live) -> Service:
    return live.service


def open_page(
    service: Service, origin: str | None = PAGE, address: str = "127.0.0.1"
) -> ClientConnection:
    """A page's socket to the service, from ``origin``, its connection from ``address`` (the
    failure limit counts per address). Use it in a ``with``."""
    sock = socket.create_connection(("127.0.0.1", service.port), source_address=(address, 0))
    url = service.url.replace("http://", "ws://") + "/rest/live/ws"
    return connect(url, sock=sock, origin=origin, proxy=None)  # type: ignore[arg-type]


def say(page: ClientConnection, message: dict[str, Any]) -> None:
    page.send(json.dumps(message))


def hear(page: ClientConnection, bound_s: float = RECV_S) -> dict[str, Any]:
    """The next message (the bound only keeps a test from hanging)."""
    message: dict[str, Any] = json.loads(page.recv(timeout=bound_s))
    return message


def closed(page: ClientConnection, bound_s: float = RECV_S) -> tuple[int, list[dict[str, Any]]]:
    """The close code the service sent, and the messages before it."""
    before = []
    try:
        while True:
            before.append(hear(page, bound_s))
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "the service closed without a close frame"
        return exc.rcvd.code, before


@contextmanager
def welcomed(
    service: Service, key: str, origin: str | None = PAGE
) -> Iterator[tuple[ClientConnection, dict[str, Any]]]:
    """A page that said hello with ``key`` and was welcomed; the welcome."""
    with open_page(service, origin) as page:
        say(page, {"type": "hello", "key": key})
        welcome = hear(page)
        assert welcome["type"] == "welcome", welcome
        yield page, welcome


def refused(
    service: Service, key: object, origin: str | None = PAGE, address: str | None = None
) -> tuple[int, str]:
    """The close code and error message a hello with ``key`` gets, from ``address`` (by
    default one of its own, so the failure limit stays out of the way)."""
    if address is None:
        n = next(_ADDRESSES)
        address = f"127.0.{n // 250 + 1}.{n % 250 + 1}"
    with open_page(service, origin, address) as page:
        say(page, {"type": "hello", "key": key})
        code, before = closed(page)
    assert [m["type"] for m in before] == ["error"], before
    return code, str(before[0]["message"])


def with_access(live: Live, app_id: str, origins: list[str]) -> tuple[httpx.Client, str]:
    """A new application (its client) with browser access from ``origins``; its public key."""
    client = live.service.client(live.new_app(app_id))
    answer = client.put(ACCESS, json={"origins": origins})
    assert answer.status_code == 200, answer.text
    return client, str(answer.json()["public_key"])


def test_access_is_created_read_rotated_and_revoked(live: Live) -> None:
    service = live.service
    client, first = with_access(live, "crud", ["HTTPS://App.Example.com:443/"])
    assert first.startswith("pk_") and len(first) == 27
    assert client.get(ACCESS).json() == {"public_key": first, "origins": [PAGE]}
    again = client.put(ACCESS, json={"origins": [PAGE, "http://localhost:3000", PAGE]})
    assert again.json() == {"public_key": first, "origins": [PAGE, "http://localhost:3000"]}
    with welcomed(service, first, "http://localhost:3000"):
        pass

    rotated = client.post(f"{ACCESS}/rotate").json()
    second = rotated["public_key"]
    assert second != first and rotated["origins"] == again.json()["origins"]
    assert refused(service, first) == (4401, "the public key is not valid (rotated or revoked?)")
    with welcomed(service, second):
        pass

    assert client.delete(ACCESS).status_code == 204
    assert refused(service, second)[0] == 4401
    for answer in (client.get(ACCESS), client.post(f"{ACCESS}/rotate"), client.delete(ACCESS)):
        assert answer.status_code == 404
    assert service.client().get(ACCESS).status_code == 401
    wrong = service.client("skm_aaaaaaaaaaaa_" + "A" * 43)
    assert wrong.put(ACCESS, json={"origins": [PAGE]}).status_code == 401


@pytest.mark.parametrize(
    "origins",
    [
        [],
        ["ftp://app.example.com"],
        ["https://app.example.com/path"],
        ["https://app.example.com?x=1"],
        ["https://user@app.example.com"],
        ["app.example.com"],
        ["https://app.example.com:99999"],
        [f"https://a{n}.example.com" for n in range(21)],
    ],
    ids=["none", "ftp", "path", "query", "user", "no-scheme", "port", "21"],
)
def test_origins_that_are_not_exact_origins_are_refused_naming_the_field(
    live: Live, origins: list[str], request: pytest.FixtureRequest
) -> None:
    client = live.service.client(live.new_app(f"bad-origin-{request.node.callspec.id}"))
    answer = client.put(ACCESS, json={"origins": origins})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "origins"]
    assert client.get(ACCESS).status_code == 404


def test_a_public_key_works_only_from_its_allowed_origins(live: Live) -> None:
    service = live.service
    _, key = with_access(live, "origins", [PAGE, "http://127.0.0.1:8080"])
    with welcomed(service, key, "http://127.0.0.1:8080") as (page, welcome):
        assert welcome == {"type": "welcome", "appId": "origins", "room": None}
        say(page, {"type": "ping"})
        assert hear(page) == {"type": "pong"}
    for origin in (
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
        None,
    ):
        code, message = refused(service, key, origin)
        assert code == 4403 and "origin" in message, (origin, code, message)


def test_a_room_token_joins_only_its_room_until_it_expires(live: Live) -> None:
    service = live.service
    client = service.client(live.new_app("tokens"))
    made = client.post(TOKENS, json={"room": "r1", "ttl_s": 600})
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["token"].startswith("skr_") and body["room"] == "r1"
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert 590 < (expires - datetime.now(UTC)).total_seconds() <= 600
    with welcomed(service, body["token"], origin=None) as (page, welcome):  # no origin needed
        assert welcome == {"type": "welcome", "appId": "tokens", "room": "r1"}
        say(page, {"type": "join", "room": "r2", "name": "Ada"})
        assert hear(page)["code"] == "room_not_allowed"
        say(page, {"type": "join", "room": "r1", "name": "Ada"})
        assert hear(page)["code"] == "live_unavailable"  # this service runs without Janus

    box = SecretBox([service.secret_key])
    claims = {"a": "tokens", "r": "r1", "e": int(time.time()) - 1}
    code, message = refused(service, "skr_" + box.encrypt(json.dumps(claims)))
    assert code == 4401 and "expired" in message
    claims["e"] = int(time.time()) + 600
    foreign = "skr_" + SecretBox([new_key()]).encrypt(json.dumps(claims))
    assert refused(service, foreign)[0] == 4401
    tail = "BBBBBB" if body["token"].endswith("AAAAAA") else "AAAAAA"
    assert refused(service, body["token"][:-6] + tail)[0] == 4401
    for plaintext in ("[1, 2", '["tokens", "r1"]', json.dumps({**claims, "e": "soon"})):
        assert refused(service, "skr_" + box.encrypt(plaintext))[0] == 4401

    gone = service.client(live.new_app("gone")).post(TOKENS, json={"room": "r1"}).json()
    apps.delete_app(live.state, "gone")
    assert refused(service, gone["token"])[0] == 4401


def test_a_token_joins_rooms_of_its_own_application(live: Live) -> None:
    ours = live.service.client(live.new_app("ours")).post(TOKENS, json={"room": "r1"}).json()
    theirs = live.service.client(live.new_app("theirs")).post(TOKENS, json={"room": "r1"})
    with welcomed(live.service, ours["token"]) as (_, welcome):
        assert welcome["appId"] == "ours"
    with welcomed(live.service, theirs.json()["token"]) as (_, welcome):
        assert welcome["appId"] == "theirs"


def test_the_tokens_api_needs_the_secret_key_and_valid_fields(live: Live) -> None:
    assert live.service.client().post(TOKENS, json={"room": "r1"}).status_code == 401
    client = live.service.client(live.new_app("token-fields"))
    for body, field in (
        ({"room": "a/b"}, "room"),
        ({"room": ""}, "room"),
        ({"room": "x" * 129}, "room"),
        ({"room": "r1", "ttl_s": 0}, "ttl_s"),
        ({"room": "r1", "ttl_s": 86_401}, "ttl_s"),
        ({"room": "r1", "ttl": 10}, "ttl"),
    ):
        answer = client.post(TOKENS, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"][0]["loc"][-1] == field, answer.text
        assert "skr_" not in answer.text


def test_the_secret_key_and_garbage_are_refused(live: Live) -> None:
    service = live.service
    secret = live.new_app("no-secret")
    code, message = refused(service, secret)
    assert code == 4401 and "public key" in message and "room token" in message
    assert secret not in message
    for key in ("garbage", "", None, 12, "pk_short", "skr_garbage", "pk_" + "A" * 24):
        assert refused(service, key)[0] == 4401, key
    with open_page(service) as page:
        say(page, {"type": "join", "room": "r1", "name": "Ada"})
        assert closed(page)[0] == 4401


def test_failed_hellos_are_limited_per_address_and_a_valid_key_still_works(live: Live) -> None:
    service = live.service
    _, key = with_access(live, "limited", [PAGE])
    for _ in range(20):
        assert refused(service, "garbage", address="127.0.0.7")[0] == 4401
    code, message = refused(service, "garbage", address="127.0.0.7")
    assert code == 4429 and "too many" in message
    with open_page(service, PAGE, "127.0.0.7") as page:
        say(page, {"type": "hello", "key": key})
        assert hear(page)["type"] == "welcome"
    assert refused(service, "garbage", address="127.0.0.8")[0] == 4401


def test_bad_messages_get_errors_and_the_socket_stays_open(live: Live) -> None:
    _, key = with_access(live, "protocol", [PAGE])
    with welcomed(live.service, key) as (page, _):
        for sent, code in (
            ("not json", "bad_json"),
            ("[1, 2]", "bad_message"),
            ('{"no": "type"}', "bad_message"),
            ('{"type": "dance"}', "unknown_type"),
            (json.dumps({"type": "ping", "pad": "x" * 16_400}), "message_too_large"),
            (b"\x00\x01", "bad_message"),
            ('{"type": "hello", "key": "x"}', "already_welcomed"),
            ('{"type": "start"}', "not_joined"),
            ('{"type": "stop"}', "not_joined"),
            ('{"type": "publisher", "janusId": 5}', "not_joined"),
            ('{"type": "join", "room": "a/b", "name": "Ada"}', "room_invalid"),
            ('{"type": "join", "room": "", "name": "Ada"}', "room_invalid"),
            ('{"type": "join", "room": 7, "name": "Ada"}', "room_invalid"),
            ('{"type": "join", "room": "r1", "name": ""}', "name_invalid"),
            ('{"type": "join", "room": "r1"}', "name_invalid"),
            ('{"type": "join", "room": "r1", "name": "a\\nb"}', "name_invalid"),
            ('{"type": "join", "room": "r1", "name": "a\\u200eb"}', "name_invalid"),
            ('{"type": "join", "room": "r1", "name": "a\\u202eb"}', "name_invalid"),
            (json.dumps({"type": "join", "room": "r1", "name": "x" * 65}), "name_invalid"),
            ('{"type": "join", "room": "r1", "name": "Ada"}', "live_unavailable"),
        ):
            page.send(sent)
            answer = hear(page)
            assert answer["type"] == "error" and answer["code"] == code, (sent, answer)
        say(page, {"type": "leave"})  # in no room: nothing to do, no answer
        say(page, {"type": "ping"})
        assert hear(page) == {"type": "pong"}


def test_browser_credentials_never_reach_the_log(live: Live) -> None:
    service = live.service
    secret = live.new_app("quiet")
    client = service.client(secret)
    key = client.put(ACCESS, json={"origins": [PAGE]}).json()["public_key"]
    token = client.post(TOKENS, json={"room": "r1"}).json()["token"]
    with welcomed(service, key), welcomed(service, token, origin=None):
        pass
    refused(service, secret)
    refused(service, key, "https://evil.example.com")
    refused(service, token[:-4] + "AAAA")
    log = service.log()
    assert "hello refused" in log
    for credential in (secret, key, token, token[4:40]):
        assert credential not in log


def test_the_cli_allows_origins_and_prints_the_public_key(live: Live) -> None:
    service = live.service
    live.new_app("cli")
    done = service.command("apps", "browser-access", "cli", "--origin", "HTTPS://Cli.example.com")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("pk_") and "https://cli.example.com" in done.stderr
    with welcomed(service, key, "https://cli.example.com"):
        pass
    rotated = service.command(
        "apps", "browser-access", "cli", "--origin", "https://cli.example.com", "--rotate"
    )
    assert rotated.returncode == 0 and rotated.stdout.strip() not in ("", key)
    assert refused(service, key, "https://cli.example.com")[0] == 4401
    bad = service.command("apps", "browser-access", "nobody", "--origin", "ftp://x")
    assert bad.returncode == 1 and "origin" in bad.stderr and not bad.stdout


def test_a_page_that_never_says_hello_is_closed_after_10_s(live: Live) -> None:
    """The module's silent page opened with the service: this last test rarely waits."""
    code, before = closed(live.silent, HELLO_TIMEOUT_S + 30)
    assert code == 4408 and [m["code"] for m in before] == ["no_hello"]


def test_pages_hear_4409_when_the_service_stops(live: Live) -> None:
    """It stops the module's service: the last test on it."""
    _, key = with_access(live, "stopping", [PAGE])
    with welcomed(live.service, key) as (page, _):
        assert live.service.proc is not None
        live.service.proc.send_signal(signal.SIGTERM)
        code, before = closed(page)
        assert code == 4409 and before == []
        # then the server stops as before (the bound only keeps a hung stop from hanging here)
        assert live.service.proc.wait(60) == 128 + signal.SIGTERM
    live.service.stop()


# --- the room flow over the socket, with the service's own Janus ------------------------------


@pytest.fixture(scope="module")
def with_janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """A service with its own Janus; application ``flow`` (settings with storage, whose
    endpoint is never reached here) with browser access from PAGE; its public key."""
    assert janus_available(), "Debian janus is not installed (make test installs it)"
    folder = tmp_path_factory.mktemp("live-flow")
    env = {"SKYMIX_JANUS": "auto"}
    with Service(folder / "data", f"sqlite:///{folder / 'skymix.db'}", env=env) as service:
        state = ServiceState.open(ServiceConfig.load(environ=service.environment()), migrate=False)
        try:
            apps.create_app(state, "flow")
            store_settings(state, "flow", STORAGE)
            key = access.set_access(state, "flow", [PAGE]).public_key
        finally:
            state.close()
        yield service, key


def joined(page: ClientConnection, room: str, name: str) -> dict[str, Any]:
    say(page, {"type": "join", "room": room, "name": name})
    answer = after_job(page)  # a recording stopped earlier may end while the page joins
    assert answer["type"] == "joined", answer
    return answer


#: A display name with a zero-width joiner (woman + ZWJ + laptop: one emoji).
CY = "Cy \U0001f469\u200d\U0001f4bb"


def after_job(page: ClientConnection) -> dict[str, Any]:
    """The next message but the stopped recording's LINK or ERROR (its job runs meanwhile)."""
    while True:
        message = hear(page)
        if message.get("state") not in ("LINK", "ERROR") or message["recordingId"] is None:
            return message


def test_two_pages_share_a_room_and_its_recording(with_janus: tuple[Service, str]) -> None:
    service, key = with_janus
    with welcomed(service, key) as (ada, _), welcomed(service, key) as (bob, _):
        first = joined(ada, "r1", "Ada")
        assert first["peerId"].startswith("p_") and first["room"] == "r1"
        assert first["peers"] == [] and first["recording"] is None
        janus = first["janus"]
        assert janus["server"].startswith("ws://127.0.0.1:") and isinstance(janus["room"], int)
        assert janus["pin"] and janus["iceServers"] == []
        second = joined(bob, "r1", "Bob")
        assert second["janus"] == janus
        assert second["peers"] == [{"peerId": first["peerId"], "name": "Ada"}]
        assert hear(ada) == {"type": "peerJoined", "peerId": second["peerId"], "name": "Bob"}
        say(ada, {"type": "join", "room": "r2", "name": "Ada"})
        assert hear(ada)["code"] == "already_joined"
        say(ada, {"type": "publisher", "janusId": 1234})  # not a publisher of that Janus room
        assert hear(ada)["code"] == "unknown_publisher"

        say(bob, {"type": "start"})
        start = hear(bob)
        assert start["type"] == "recordingState" and start["state"] == "START", start
        recording_id = start["recordingId"]
        assert hear(ada) == start
        say(ada, {"type": "start"})
        refusal = hear(ada)
        assert refusal["state"] == "ERROR" and refusal["recordingId"] is None
        assert refusal["error"]["code"] == "recording_running"
        assert recording_id in refusal["error"]["message"]
        say(ada, {"type": "stop"})
        stop = hear(ada)
        assert (stop["state"], stop["recordingId"], stop["reason"]) == (
            "STOP",
            recording_id,
            "requested",
        )
        assert hear(bob) == stop
        say(ada, {"type": "stop"})
        assert after_job(ada)["error"]["code"] == "no_recording"

        say(bob, {"type": "leave"})
        assert after_job(ada) == {"type": "peerLeft", "peerId": second["peerId"], "name": "Bob"}
        third = joined(bob, "r1", "Bob again")  # a page may join again after leaving
        assert {"peerId": first["peerId"], "name": "Ada"} in third["peers"]
        assert after_job(ada)["type"] == "peerJoined"
        with welcomed(service, key) as (cy, _):
            cy_id = joined(cy, "r1", CY)["peerId"]  # a name with an emoji's joiner
            assert after_job(ada)["peerId"] == cy_id
        # Cy's socket closed without a leave
        assert after_job(ada) == {"type": "peerLeft", "peerId": cy_id, "name": CY}
        assert after_job(bob)["type"] == "peerJoined" and after_job(bob)["type"] == "peerLeft"
        with welcomed(service, key) as (dan, _):  # a flood: more than MAX_WAITING waiting
            dan_id = joined(dan, "r1", "Dan")["peerId"]
            with contextlib.suppress(ConnectionClosed):  # closed while it still sends
                for _ in range(40 * MAX_WAITING):
                    say(dan, {"type": "publisher", "janusId": 1234})  # each asks Janus
            code, before = closed(dan)
            assert code == 1008 and before[-1]["code"] == "too_many_messages"
        assert after_job(ada)["peerId"] == dan_id
        assert after_job(ada) == {"type": "peerLeft", "peerId": dan_id, "name": "Dan"}
    log = service.log()
    assert key not in log


# --- the access functions on both databases ---------------------------------------------------


def test_access_rows_on_each_database(database_url: str, tmp_path: Path) -> None:
    """Made, updated, rotated, revoked; gone with its application; a public key is unique."""
    config = ServiceConfig(data_dir=tmp_path, database_url=database_url, secret_keys=[new_key()])
    state = ServiceState.open(config)
    try:
        for app_id in ("a1", "a2"):
            apps.create_app(state, app_id)
        made = access.set_access(state, "a1", ["https://A.example.com", "http://b.example.com:80"])
        assert made.origins == ["https://a.example.com", "http://b.example.com"]
        kept = access.set_access(state, "a1", ["https://c.example.com"])
        assert kept == access.AccessView(made.public_key, ["https://c.example.com"])
        assert access.get_access(state, "a1") == kept
        rotated = access.rotate_public_key(state, "a1")
        assert rotated is not None and rotated.public_key != made.public_key
        grant = access.authenticate_browser(state, rotated.public_key, "https://c.example.com")
        assert grant == access.BrowserGrant("a1", None)
        with pytest.raises(OptionsError, match="no application nobody"):
            access.set_access(state, "nobody", [PAGE])
        other = access.set_access(state, "a2", [PAGE])
        with pytest.raises(IntegrityError), state.db.session() as session:
            row = session.get(BrowserAccess, "a2")
            assert row is not None
            row.public_key = rotated.public_key
        assert access.get_access(state, "a2") == other
        apps.delete_app(state, "a1")
        assert access.get_access(state, "a1") is None
        with pytest.raises(access.BrowserAuthError):
            access.authenticate_browser(state, rotated.public_key, "https://c.example.com")
        assert access.revoke_access(state, "a2") and not access.revoke_access(state, "a2")
        assert access.rotate_public_key(state, "a2") is None
    finally:
        state.close()
