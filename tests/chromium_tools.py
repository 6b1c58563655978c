"""Chromium for the tests: its flags (headless, fake camera and microphone from files, host
candidates as addresses), and a bare page publishing with Debian's janus.js and adapter.js, served
on 127.0.0.1 (a secure context) for the tests that talk to a Janus without the service."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
JANUS_JS = Path("/usr/share/javascript/janus-gateway/janus.js")
ADAPTER_JS = Path("/usr/share/javascript/webrtc-adapter/adapter.js")


def chromium_flags(video: Path | None = None, audio: Path | None = None) -> list[str]:
    """Headless Chromium with nothing to ask and no network beyond the pages', fake devices
    (the files as camera and microphone when given), host candidates shown as addresses (not
    mDNS names)."""
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if video is not None:
        flags.append(f"--use-file-for-fake-video-capture={video}")
    if audio is not None:
        flags.append(f"--use-file-for-fake-audio-capture={audio}")
    return flags


PUBLISH_PAGE = """<!doctype html><meta charset="utf-8"><title>publish</title>
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


def serve_publish_page(root: Path) -> http.server.ThreadingHTTPServer:
    """PUBLISH_PAGE as index.html with Debian's janus.js and adapter.js, served from ``root``
    on 127.0.0.1 (a thread; ``shutdown()`` it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(PUBLISH_PAGE)
    shutil.copy(JANUS_JS, root / "janus.js")
    shutil.copy(ADAPTER_JS, root / "adapter.js")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
