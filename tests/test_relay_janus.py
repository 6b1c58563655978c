"""The library's Janus: a private gateway on 127.0.0.1 and its videoroom driven over HTTP.

These run the real Janus on the host: no media flows, so no network namespace is needed (see
janus_tools for why media needs one). Each test starts its own gateway (~1 s).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import urllib.request
import uuid
from pathlib import Path
from types import FrameType

import pytest

from skymix import RelayError
from skymix.relay import JanusProcess, VideoRoomClient, janus_available

SECRET = "room-secret-" + uuid.uuid4().hex
ADMIN_KEY = "admin-key-" + uuid.uuid4().hex


@pytest.fixture(autouse=True)
def _janus_installed() -> None:
    # make test installs janus: its absence is a set-up failure, not a skip
    assert janus_available(), "Debian janus is not installed (make test installs it)"


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def proc_sockets(kind: str) -> list[tuple[str, int, str, int]]:
    """(local address, port, state, inode) of every socket in /proc/net/<kind>{,6}."""
    rows = []
    for name in (kind, kind + "6"):
        lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            address, port = fields[1].split(":")
            if len(address) == 8:
                text = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
            else:
                text = "ipv6:" + address
            rows.append((text, int(port, 16), fields[3], int(fields[9])))
    return rows


def test_janus_listens_on_loopback_only_and_stops(tmp_path: Path) -> None:
    janus = JanusProcess(tmp_path / "janus", admin_key=ADMIN_KEY, websockets=True)
    info = janus.start()
    try:
        assert info["version_string"] and janus.pid is not None
        assert list(info["transports"]) == ["janus.transport.http", "janus.transport.websockets"]
        pid = janus.pid
        mine = socket_inodes(pid)
        tcp = [row for row in proc_sockets("tcp") if row[3] in mine]
        listening = {(address, port) for address, port, state, _ in tcp if state == "0A"}
        assert listening == {("127.0.0.1", janus.http_port), ("127.0.0.1", janus.ws_port)}
        assert [row for row in proc_sockets("udp") if row[3] in mine] == []
        text = janus.log_text()
        assert "videoroom" in text and ADMIN_KEY not in text
        assert ADMIN_KEY not in repr(janus)
    finally:
        janus.stop()
    assert janus.process is not None and janus.process.returncode == 0
    assert not Path(f"/proc/{pid}").exists()
    for config in (tmp_path / "janus").glob("*.jcfg"):
        assert config.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in (tmp_path / "janus" / "transports").iterdir()) == [
        "libjanus_http.so",
        "libjanus_websockets.so",
    ]


def test_server_info_names_only_videoroom_and_our_transports(tmp_path: Path) -> None:
    with JanusProcess(tmp_path / "janus") as janus:
        with urllib.request.urlopen(f"{janus.url}/info", timeout=5) as response:
            info = json.loads(response.read())
    assert list(info["plugins"]) == ["janus.plugin.videoroom"]
    assert list(info["transports"]) == ["janus.transport.http"]
    assert list(info["events"]) == [] and list(info["loggers"]) == []


def test_room_recording_and_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    recordings = tmp_path / "rec"
    recording_id = "R-" + uuid.uuid4().hex[:8]
    with JanusProcess(tmp_path / "janus", admin_key=ADMIN_KEY) as janus:
        with janus.client() as client:
            assert ADMIN_KEY not in repr(client)
            room = client.create_room(4242, secret=SECRET, rec_dir=recordings)
            assert room == 4242
            [listed] = [r for r in client.list_rooms() if r["room"] == room]
            assert listed["lock_record"] is True and listed["record"] is False
            client.set_rec_dir(room, recordings / recording_id, secret=SECRET)
            client.enable_recording(room, True, secret=SECRET)
            [listed] = [r for r in client.list_rooms() if r["room"] == room]
            assert listed["record"] is True
            assert listed["rec_dir"] == str(recordings / recording_id)
            assert client.list_participants(room) == []
            client.keepalive()

            with pytest.raises(RelayError) as wrong:
                client.enable_recording(room, False, secret="not-" + SECRET)
            assert wrong.value.error_code == 433
            assert "enable_recording" in str(wrong.value) and "433" in str(wrong.value)
            with pytest.raises(RelayError) as duplicate:
                client.create_room(room, secret=SECRET)
            assert duplicate.value.error_code == 427
            with pytest.raises(RelayError) as missing:
                client.list_participants(999)
            assert missing.value.error_code == 426
            client.enable_recording(room, False, secret=SECRET)
            client.destroy_room(room, secret=SECRET)
            assert [r for r in client.list_rooms() if r["room"] == room] == []

        # without the admin key no room can be made (browsers cannot)
        with VideoRoomClient(janus.url) as stranger:
            with pytest.raises(RelayError) as refused:
                stranger.create_room(77, secret=SECRET)
            assert refused.value.error_code == 429
        log_text = janus.log_text()
    for error in (wrong.value, duplicate.value, missing.value, refused.value):
        assert isinstance(error, OSError) and error.code == "relay_failed"
        assert SECRET not in str(error) and ADMIN_KEY not in str(error)
    assert SECRET not in caplog.text and ADMIN_KEY not in caplog.text
    assert SECRET not in log_text and ADMIN_KEY not in log_text


def test_a_destroyed_room_s_secret_is_forgotten(tmp_path: Path) -> None:
    with JanusProcess(tmp_path / "janus", admin_key=ADMIN_KEY) as janus, janus.client() as client:
        for n in range(3):
            room = client.create_room(None, secret=f"{SECRET}-{n}")
            client.destroy_room(room, secret=f"{SECRET}-{n}")
        kept = client.create_room(None, secret=SECRET)
        assert client._secrets == {ADMIN_KEY, SECRET}  # the scrubbed secrets do not pile up
        client.destroy_room(kept, secret=SECRET)
        assert client._secrets == {ADMIN_KEY}


def test_janus_error_and_no_gateway_raise_relay_error(tmp_path: Path) -> None:
    with JanusProcess(tmp_path / "janus") as janus:
        client = janus.client(timeout=5)
        client.connect()
        client.session = 12345  # a session Janus does not know
        with pytest.raises(RelayError) as unknown:
            client.keepalive()
        assert unknown.value.error_code == 458
        url = janus.url
    with pytest.raises(RelayError, match="no answer"):
        VideoRoomClient(url, timeout=2).connect()


def test_interrupted_start_leaves_no_process(tmp_path: Path) -> None:
    janus = JanusProcess(tmp_path / "janus")

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if janus.process is not None:  # the gateway was launched and is not ready yet
            signal.setitimer(signal.ITIMER_REAL, 0)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
        with pytest.raises(KeyboardInterrupt):
            janus.start()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert janus.process is not None
    assert janus.process.returncode is not None
    assert not Path(f"/proc/{janus.process.pid}").exists()


def test_a_public_address_is_given_to_janus_as_its_nat_mapping(tmp_path: Path) -> None:
    with JanusProcess(tmp_path / "janus", nat_1_1="203.0.113.7", ice_interface="lo") as janus:
        config = (tmp_path / "janus" / "janus.jcfg").read_text()
        assert 'nat_1_1_mapping = "203.0.113.7"' in config
        assert 'ice_enforce_list = "lo"' in config
        assert "Using nat_1_1_mapping for public IP: 203.0.113.7" in janus.log_text()
    with JanusProcess(tmp_path / "plain"):
        assert "nat_1_1_mapping" not in (tmp_path / "plain" / "janus.jcfg").read_text()


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"janus": "succ',  # died mid-answer
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!",
        b"HTTP/1.1 2",  # died mid-status line
    ],
)
def test_a_gateway_that_dies_mid_answer_is_a_relay_error(answer: bytes) -> None:
    # the way a Janus killed while answering looks to its client: a cut or garbled answer
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def serve() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

        thread = threading.Thread(target=serve)
        thread.start()
        client = VideoRoomClient(f"http://127.0.0.1:{port}/janus", admin_key=ADMIN_KEY, timeout=5)
        with pytest.raises(RelayError, match="no answer"):
            client.connect()
        thread.join(5)
