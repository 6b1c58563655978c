"""ICE on one machine, without the service: two Chromium pages publish to a bare Janus (started by
skymix.relay.janus.JanusProcess, ICE enforced to the namespace's bridge) with Debian's janus.js
and webrtc-adapter, and each gets the other's feed; both reach webrtcup."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import BRIDGE, Peer
from skymix.relay.janus import JanusProcess

JANUS_JS = Path("/usr/share/javascript/janus-gateway/janus.js")
ADAPTER_JS = Path("/usr/share/javascript/webrtc-adapter/adapter.js")
ROOM = 77

PAGE = """<!doctype html><meta charset="utf-8"><title>ice</title>
<script src="adapter.js"></script><script src="janus.js"></script><script>
window.events = [];
function publish(server, room, name) {
  Janus.init({debug: false, callback: () => {
    const janus = new Janus({server, iceServers: [], error: e => events.push("error " + e),
      success: () => janus.attach({plugin: "janus.plugin.videoroom",
        success: h => { window.handle = h;
          h.send({message: {request: "join", room, ptype: "publisher", display: name}}); },
        onmessage: (msg, jsep) => {
          events.push(msg.videoroom);
          if (msg.videoroom === "joined") window.handle.createOffer({
            tracks: [{type: "audio", capture: true, recv: false},
                     {type: "video", capture: true, recv: false}],
            success: offer => window.handle.send(
              {message: {request: "configure", audio: true, video: true}, jsep: offer}),
            error: e => events.push("offer " + e)});
          for (const p of msg.publishers || []) (window.feeds = window.feeds || []).push(p.display);
          if (jsep) window.handle.handleRemoteJsep({jsep});
        },
        webrtcState: on => { window.up = on; },
      })});
  }});
}
</script>"""

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
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text(PAGE)
    shutil.copy(JANUS_JS, root / "janus.js")
    shutil.copy(ADAPTER_JS, root / "adapter.js")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
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
