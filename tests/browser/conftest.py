"""Fixtures of the browser scenarios, which run only inside the network namespace that
tests/test_live_browser.py makes (SKYMIX_BROWSER_INSIDE=1): elsewhere nothing here is collected.

In the namespace: lo and the port-less bridge skymix0 (10.213.0.1/24) are its only interfaces, so
every server (SeaweedFS, the service, its Janus) listens on 127.0.0.1 of the namespace and ICE
runs over the bridge (Janus and Chromium both skip loopback candidates). One SeaweedFS and one
service (its own Janus, demo_app "demo") serve every scenario; each peer is a Chromium of its own,
because the fake camera and microphone files are browser-wide flags.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chromium_tools import CHROMIUM, chromium_flags

INSIDE = os.environ.get("SKYMIX_BROWSER_INSIDE") == "1"

if not INSIDE:
    collect_ignore_glob = ["*.py"]

BRIDGE = "skymix0"
DEMO_APP = "demo"
TAP = Path(__file__).with_name("capture_tap.js")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where MP4s, screenshots and logs are kept for the outer test."""
    folder = os.environ.get("SKYMIX_BROWSER_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def namespace_network() -> None:
    """lo up and the bridge, in the fresh namespace (it must hold nothing but lo)."""
    from janus_tools import _setup_namespace_network

    _setup_namespace_network()


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Each peer's fake camera (y4m) and microphone (wav) files."""
    from media import PEERS, make_media

    folder = tmp_path_factory.mktemp("media")
    return {name: make_media(peer, folder) for name, peer in PEERS.items()}


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@dataclass
class Peer:
    """One person: a Chromium of its own, its page, what the page logged."""

    name: str
    browser: Any
    page: Any
    console: list[str] = field(default_factory=list)

    def capture(self) -> dict[str, Any]:
        """What the capture tap saw (beeps in Unix ms, flashes in monotonic µs)."""
        result: dict[str, Any] = self.page.evaluate("window.__skymixCapture")
        return result

    def close(self) -> None:
        self.browser.close()


@pytest.fixture
def launch(
    playwright_driver: Any,
    media: dict[str, tuple[Path, Path]],
    artifacts: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[str], Peer]]:
    """launch(name): a Chromium with name's fake devices and a page with the capture tap; all
    closed at the end, their console lines written to artifacts."""
    peers: list[Peer] = []

    def start(name: str) -> Peer:
        video, audio = media[name]
        browser = playwright_driver.chromium.launch(
            executable_path=CHROMIUM,
            args=chromium_flags(video, audio),
            ignore_default_args=["--mute-audio"],
        )
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        context.add_init_script(path=str(TAP))
        page = context.new_page()
        peer = Peer(name, browser, page)
        page.on("console", lambda m: peer.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: peer.console.append(f"pageerror: {e}"))
        peers.append(peer)
        return peer

    yield start
    for n, peer in enumerate(peers):
        log = artifacts / f"console-{request.node.name}-{n}-{peer.name}.log"
        log.write_text("\n".join(peer.console))
        try:
            peer.close()
        except Exception:  # noqa: BLE001 - a browser already gone
            pass


def wall_minus_monotonic() -> float:
    """Unix time less the monotonic clock, for VideoFrame timestamps (µs of that clock)."""
    return time.time() - time.monotonic()
