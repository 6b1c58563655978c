"""What the service serves browsers for live rooms: skymix.js and its types, Janus's janus.js
and adapter.js from their Debian packages, and the demo page with the demo application's public
key (and nothing secret). skymix.js is checked to be a valid ES module whose exports and methods
skymix.d.ts declares; the demo page is loaded in the real Chromium (the full call with media is
tests/browser's)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException

from chromium_tools import CHROMIUM, chromium_flags
from service_tools import Service
from skymix.errors import OptionsError
from skymix.service.api import static_api
from skymix.service.config import ServiceConfig
from skymix.service.crypto import new_key
from skymix.service.state import ServiceState

STATIC = files("skymix.service") / "static"
PUBLIC_KEY = re.compile(r'<meta name="skymix-key" content="(pk_[A-Za-z0-9_-]{24})">')


@pytest.fixture(scope="module")
def demo_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """A service (SQLite, no Janus) serving the demo of application ``demo``; its secret key."""
    data = tmp_path_factory.mktemp("static") / "data"
    service = Service(data, f"sqlite:///{data / 'skymix.db'}", env={"SKYMIX_DEMO_APP": "demo"})
    data.mkdir(parents=True)
    secret = service.create_app("demo")
    with service:
        yield service, secret


def test_scripts_are_served_with_their_types(demo_service: tuple[Service, str]) -> None:
    service, _ = demo_service
    with service.client() as client:
        js = client.get("/skymix.js")
        assert js.status_code == 200
        assert js.headers["content-type"] == "text/javascript; charset=utf-8"
        assert js.text == (STATIC / "skymix.js").read_text()
        assert js.headers["access-control-allow-origin"] == "*"
        types = client.get("/skymix.d.ts")
        assert types.status_code == 200
        assert "export declare class Skymix" in types.text
        for name, (path, _) in static_api.VENDOR.items():
            vendor = client.get(f"/vendor/{name}")
            assert vendor.status_code == 200
            assert vendor.headers["content-type"] == "text/javascript; charset=utf-8"
            assert vendor.content == path.read_bytes()
        assert client.get("/vendor/other.js").status_code == 404
        assert client.get("/vendor/..%2F..%2Fetc%2Fpasswd").status_code == 404
        paths = client.get("/openapi.json").json()["paths"]
        assert not [p for p in paths if p.startswith(("/skymix", "/vendor", "/demo"))]


def test_a_missing_vendor_script_is_a_503_naming_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        static_api.VENDOR, "janus.js", (tmp_path / "absent.js", "libjs-janus-gateway")
    )
    with pytest.raises(HTTPException) as refused:
        static_api.vendor("janus.js")
    assert refused.value.status_code == 503
    assert "libjs-janus-gateway" in str(refused.value.detail)


def test_the_demo_page_carries_the_public_key_and_no_secret(
    demo_service: tuple[Service, str],
) -> None:
    service, secret = demo_service
    with service.client() as client:
        page = client.get("/demo")
        again = client.get("/demo")
        script = client.get("/demo/demo.js")
        style = client.get("/demo/demo.css")
        missing = client.get("/demo/other.js")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    found = PUBLIC_KEY.search(page.text)
    assert found is not None, page.text
    assert f'content="{found[1]}"' in again.text  # made once, then kept
    for text in (page.text, script.text, style.text):
        assert secret not in text
        assert service.secret_key not in text
        assert "skm_" not in text and "__SKYMIX_KEY__" not in text
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javasc")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404
    for id_ in (
        "name",
        "join",
        "leave",
        "start",
        "stop",
        "state",
        "recording",
        "download",
        "peers",
    ):
        assert f'id="{id_}"' in page.text
    assert secret not in service.log() and service.secret_key not in service.log()


def test_no_demo_unless_configured(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Service(data, f"sqlite:///{data / 'skymix.db'}") as plain:
        assert httpx.get(f"{plain.url}/demo").status_code == 404
        assert httpx.get(f"{plain.url}/demo/demo.js").status_code == 404
        assert httpx.get(f"{plain.url}/skymix.js").status_code == 200
    # demo_app naming no application: the page is not made (the route answers 404 with this)
    other = tmp_path / "other"
    environ = {"SKYMIX_DATA_DIR": str(other), "SKYMIX_DATABASE_URL": f"sqlite:///{other}/s.db"}
    state = ServiceState.open(
        ServiceConfig.load(environ={**environ, "SKYMIX_SECRET_KEY": new_key()})
    )
    try:
        with pytest.raises(OptionsError, match="no application nope"):
            static_api.demo_page(state, "nope")
    finally:
        state.close()


def _exports(text: str, declare: str) -> set[str]:
    pattern = rf"^export {declare}(?:const|class|function) (\w+)"
    return set(re.findall(pattern, text, re.MULTILINE))


def _class_methods(text: str, name: str) -> set[str]:
    body = text.split(f"class {name} ", 1)[1]
    body = body.split("\n}\n", 1)[0]
    methods = re.findall(r"^  (?:async )?([A-Za-z]\w*)(?:<[^>]*>)?\(", body, re.MULTILINE)
    return set(methods) - {"constructor"}


def test_skymix_js_is_a_module_its_types_describe(tmp_path: Path) -> None:
    js = (STATIC / "skymix.js").read_text()
    types = (STATIC / "skymix.d.ts").read_text()
    copy = tmp_path / "skymix.mjs"
    copy.write_text(js)
    node = shutil.which("node")
    assert node is not None
    checked = subprocess.run([node, "--check", copy], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    exported = _exports(js, "")
    assert {"Skymix", "RECORDING_STATE"} <= exported
    assert exported == _exports(types, "declare ")
    methods = _class_methods(js, "Skymix")
    assert {"init", "joinRoom", "leaveRoom", "startRecording", "stopRecording", "on", "off"} <= (
        methods
    )
    assert methods == _class_methods(types, "Skymix")
    events = set(re.findall(r'"(\w+)"', js.split("const EVENTS = [", 1)[1].split("]", 1)[0]))
    interface = types.split("export interface SkymixEvents {", 1)[1].split("\n}\n", 1)[0]
    assert events == set(re.findall(r"^  (\w+): \(", interface, re.MULTILINE))
    for state in ("START", "STOP", "LINK", "ERROR"):
        assert f'{state}: "{state}"' in js and f'readonly {state}: "{state}"' in types


def test_the_demo_page_loads_in_chromium_and_names_a_room(
    demo_service: tuple[Service, str],
) -> None:
    from playwright.sync_api import sync_playwright

    service, _ = demo_service
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=chromium_flags(),
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{service.url}/demo")
            found = PUBLIC_KEY.search(page.content())
            assert found is not None
            key = found[1]
            page.wait_for_function("location.search.startsWith('?room=')")
            room = page.evaluate("new URL(location.href).searchParams.get('room')")
            assert re.fullmatch(r"[a-z0-9-]{1,128}", room)
            assert page.text_content("#share-link") == f"{service.url}/demo?room={room}"
            assert page.get_attribute("#state", "data-state") == ""
            assert page.is_enabled("#join") and not page.is_enabled("#start")
            # a page opened with a room keeps it; the module and Janus's scripts load
            page.goto(f"{service.url}/demo?room=team.standup_1")
            page.wait_for_selector("#join")
            assert page.evaluate("location.search") == "?room=team.standup_1"
            states = page.evaluate(
                """async () => {
                    const m = await import('/skymix.js');
                    for (const src of ['/vendor/adapter.js', '/vendor/janus.js']) {
                        await new Promise((ok, fail) => {
                            const s = document.createElement('script');
                            s.src = src; s.onload = ok; s.onerror = fail;
                            document.head.append(s);
                        });
                    }
                    return [Object.keys(m.RECORDING_STATE), typeof Janus.init,
                            typeof adapter.browserDetails, new m.Skymix().server];
                }"""
            )
            assert states == [["START", "STOP", "LINK", "ERROR"], "function", "object", service.url]
            # Join: the page's key is accepted from its origin; this service has no relay, which
            # the page shows as an ERROR, ready to try again
            page.fill("#name", "Ada")
            page.click("#join")
            page.wait_for_selector("#state[data-state='ERROR']")
            assert (page.text_content("#state") or "").startswith("ERROR: live rooms are")
            assert "could not join" in (page.text_content("#log") or "")
            assert page.is_enabled("#join") and page.locator("[data-peer]").count() == 0
            # a page of another origin (a customer's) imports the module: a CORS fetch
            page.goto(f"http://localhost:{service.port}/demo?room=r")
            imported = page.evaluate(
                "async url => Object.keys(await import(url + '/skymix.js')).sort()", service.url
            )
            assert imported == ["RECORDING_STATE", "Skymix", "SkymixError"]
            # the demo's key from an origin it does not allow, and a key that is none: refused,
            # each with its own code
            refused = page.evaluate(
                """async key => {
                    const { Skymix } = await import('/skymix.js');
                    const codes = [];
                    for (const k of [key, 'pk_' + 'x'.repeat(24)]) {
                        try { await new Skymix().init(k); codes.push('accepted'); }
                        catch (e) { codes.push(e.code); }
                    }
                    return codes;
                }""",
                key,
            )
            assert refused == ["origin_not_allowed", "unauthorized"]
        finally:
            browser.close()
    assert problems == []


def _descendants(pid: int) -> set[int]:
    """Every process under ``pid`` (from /proc's children lists of each thread)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        children: list[str] = []
        for task in Path(f"/proc/{parent}/task").glob("*"):  # a thread's children are its own
            try:
                children += (task / "children").read_text().split()
            except OSError:
                continue
        for child in map(int, children):
            found.add(child)
            todo.append(child)
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie its parent has not reaped


def test_demo_live_serves_the_page_until_ctrl_c(tmp_path: Path) -> None:
    """`skymix demo --live` (SeaweedFS, the service with its own Janus, the application set to
    store into the bucket) as a user runs it: the printed page has a public key and a page's
    first steps reach the relay; Ctrl-C stops every process it started. One test of the whole
    command (about 10 s: it starts three servers)."""
    from websockets.sync.client import connect
    from websockets.typing import Origin

    demo = subprocess.Popen(
        [sys.executable, "-m", "skymix", "demo", "--live"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches it
    )
    assert demo.stdout is not None
    try:
        url = None
        for line in demo.stdout:  # ends when the demo does, at the latest
            url = re.search(r"open (http://127\.0\.0\.1:\d+)/demo in two tabs", line)
            if url is not None:
                break
        assert url is not None, demo.stdout.read()
        page = httpx.get(f"{url[1]}/demo", timeout=30)
        key = PUBLIC_KEY.search(page.text)
        assert page.status_code == 200 and key is not None
        # what the page does first: its key from its origin, a room, the relay's address
        ws = url[1].replace("http", "ws") + "/rest/live/ws"
        with connect(ws, origin=Origin(url[1]), open_timeout=30) as socket:
            socket.send(json.dumps({"type": "hello", "key": key[1]}))
            assert json.loads(socket.recv(30)) == {"type": "welcome", "appId": "demo", "room": None}
            socket.send(json.dumps({"type": "join", "room": "r1", "name": "Ada"}))
            joined = json.loads(socket.recv(30))
            socket.send(json.dumps({"type": "leave"}))
        assert joined["type"] == "joined", joined
        assert joined["janus"]["server"].startswith("ws://127.0.0.1:")
        started = _descendants(demo.pid)
        assert len(started) >= 3  # SeaweedFS, the service, its Janus
        os.killpg(demo.pid, signal.SIGINT)
        rest = demo.stdout.read()
        assert demo.wait(60) == 130, rest
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)  # the group this test started
            demo.wait()
    assert "stopping the service and SeaweedFS" in rest
    assert all(_gone(pid) for pid in started)
    log = (tmp_path / "skymix-live-demo" / "service.log").read_text()
    assert "checked: put, get and delete work" in log  # the settings API took the bucket
    assert "Traceback" not in log
