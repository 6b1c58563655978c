"""ICE on one machine, without the service: two Chromium pages publish to a bare Janus (started by
skymix.relay.janus.JanusProcess, ICE enforced to the namespace's bridge) with Debian's janus.js
and webrtc-adapter, and each gets the other's feed; both reach webrtcup."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chromium_tools import serve_publish_page
from conftest import BRIDGE, Peer
from skymix.relay.janus import JanusProcess

ROOM = 77


# the local and remote addresses of the ICE pair the publisher's connection uses
SELECTED_PAIR = """async () => {
  const stats = await window.handle.webrtcStuff.pc.getStats();
  const all = [...stats.values()];
  const transport = all.find(s => s.type === "transport");
  const pair = stats.get(transport.selectedCandidatePairId);
  return [stats.get(pair.localCandidateId).address, stats.get(pair.remoteCandidateId).address];
}"""


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[JanusProcess]:
    with JanusProcess(
        tmp_path / "janus", websockets=True, ice_interface=BRIDGE, die_with_parent=True
    ) as process:
        yield process


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """The page and the Debian scripts on a 127.0.0.1 server (a secure context)."""
    server = serve_publish_page(tmp_path / "www")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()


def _create_room(janus: JanusProcess) -> None:
    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        data = json.dumps({"transaction": uuid.uuid4().hex, **body}).encode()
        request = urllib.request.Request(
            janus.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            reply: dict[str, object] = json.loads(answer.read())
        return reply

    session = post("", {"janus": "create"})["data"]["id"]  # type: ignore[index]
    handle = post(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
    message = {"request": "create", "admin_key": janus.admin_key, "room": ROOM, "publishers": 4}
    created = post(f"/{session}/{handle['data']['id']}", {"janus": "message", "body": message})  # type: ignore[index]
    assert created["plugindata"]["data"]["videoroom"] == "created", created  # type: ignore[index]


def test_two_chromiums_connect_through_janus(
    janus: JanusProcess, site: str, launch: Callable[[str], Peer]
) -> None:
    _create_room(janus)
    peers = [launch("ada"), launch("bob")]
    for peer in peers:
        peer.page.goto(site)
        peer.page.evaluate("([s, r, n]) => publish(s, r, n)", [janus.ws_url, ROOM, peer.name])
    for peer, other in zip(peers, reversed(peers)):
        peer.page.wait_for_function("window.up === true", timeout=30_000)
        peer.page.wait_for_function(f"(window.feeds || []).includes({other.name!r})")
        # the fake devices run and the tap sees the files' beeps and flashes
        peer.page.wait_for_function(
            "__skymixCapture.beeps.length >= 1 && __skymixCapture.flashes.length >= 1",
            timeout=30_000,
        )
        assert peer.page.evaluate(SELECTED_PAIR) == ["10.213.0.1", "10.213.0.1"]
