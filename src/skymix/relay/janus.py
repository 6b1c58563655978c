"""A private Janus gateway (videoroom plugin only) and a client of its videoroom over HTTP.

Janus loads every library in its plugin and transport folders and reads its configs from one
folder, so `write_config` gives it a folder of its own: symlinks to the videoroom plugin and the
HTTP (optionally WebSockets) transport alone, empty event handler and logger folders, an HTTP API
on 127.0.0.1 only, no admin API, and a videoroom `admin_key` so only the holder of the key (skymix,
not a browser) can create rooms. Janus never gathers ICE candidates on loopback, so media still
uses the other interfaces unless `ice_interface` names one.

Videoroom errors are not Janus errors: Janus answers ``"janus":"success"`` with
``plugindata.data.error_code``. `VideoRoomClient` raises `RelayError` for both. Secrets (the
admin key, room secrets) appear in no repr, log line or error message.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import RelayError
from ..processes import stop_process

log = logging.getLogger(__name__)

JANUS_BINARY = shutil.which("janus") or "/usr/bin/janus"
JANUS_LIBRARIES = Path("/usr/lib/x86_64-linux-gnu/janus")
VIDEOROOM = "janus.plugin.videoroom"

_PLUGIN = ("plugins", "libjanus_videoroom.so")
_HTTP = ("transports", "libjanus_http.so")
_WEBSOCKETS = ("transports", "libjanus_websockets.so")


def janus_available(binary: str = JANUS_BINARY, libraries: Path = JANUS_LIBRARIES) -> bool:
    """Whether the Janus binary, its videoroom plugin and HTTP transport are installed."""
    return (
        Path(binary).exists()
        and (libraries / _PLUGIN[0] / _PLUGIN[1]).exists()
        and (libraries / _HTTP[0] / _HTTP[1]).exists()
    )


def _jcfg_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def _write_private(path: Path, text: str) -> None:
    """Write a config readable by its owner only (it may hold the admin key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def write_config(
    directory: Path,
    *,
    http_port: int,
    admin_key: str,
    ws_port: int | None = None,
    rooms: dict[int, dict[str, object]] | None = None,
    ice_interface: str | None = None,
    nat_1_1: str | None = None,
    libraries: Path = JANUS_LIBRARIES,
) -> Path:
    """Write a minimal Janus config into directory; return the janus.jcfg path.

    Only the videoroom plugin and the HTTP transport (and WebSockets when ws_port is given) are
    loaded, both listening on 127.0.0.1; rooms are static videoroom rooms (settings as in
    janus.plugin.videoroom.jcfg), usually none: rooms are created through the API. ice_interface
    limits ICE candidates to one interface; nat_1_1 is the public address of a 1:1 NAT (EC2 and
    the like): Janus advertises it in its candidates instead of the host's own.
    """
    directory.mkdir(parents=True, exist_ok=True)
    wanted = [_PLUGIN, _HTTP] + ([_WEBSOCKETS] if ws_port is not None else [])
    for sub in ("plugins", "transports", "events", "loggers"):
        folder = directory / sub
        folder.mkdir(exist_ok=True)
        for entry in folder.iterdir():  # a folder reused with other transports loads only these
            if (sub, entry.name) not in wanted:
                entry.unlink()
    for sub, lib in wanted:
        link = directory / sub / lib
        if not link.is_symlink():
            link.symlink_to(libraries / sub / lib)
    nat = ["\tignore_mdns = true", "\tfull_trickle = false", "\tice_tcp = false"]
    if ice_interface is not None:
        nat.append(f"\tice_enforce_list = {json.dumps(ice_interface)}")
    if nat_1_1 is not None:
        nat.append(f"\tnat_1_1_mapping = {json.dumps(nat_1_1)}")
    nat_lines = "\n".join(nat)
    _write_private(
        directory / "janus.jcfg",
        f"""\
general: {{
	configs_folder = {json.dumps(str(directory))}
	plugins_folder = {json.dumps(str(directory / "plugins"))}
	transports_folder = {json.dumps(str(directory / "transports"))}
	events_folder = {json.dumps(str(directory / "events"))}
	loggers_folder = {json.dumps(str(directory / "loggers"))}
	debug_level = 4
	debug_timestamps = true
	session_timeout = 60
	server_name = "skymix"
	interface = "127.0.0.1"
}}
certificates: {{
}}
media: {{
	ipv6 = false
	rtp_port_range = "20000-60000"
}}
nat: {{
{nat_lines}
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
	broadcast = false
}}
""",
    )
    _write_private(
        directory / "janus.transport.http.jcfg",
        f"""\
general: {{
	json = "plain"
	base_path = "/janus"
	http = true
	ip = "127.0.0.1"
	port = {http_port}
	https = false
}}
admin: {{
	admin_http = false
	admin_https = false
}}
cors: {{
}}
""",
    )
    if ws_port is not None:
        _write_private(
            directory / "janus.transport.websockets.jcfg",
            f"""\
general: {{
	json = "plain"
	ws = true
	ws_ip = "127.0.0.1"
	ws_port = {ws_port}
	wss = false
}}
admin: {{
	admin_ws = false
	admin_wss = false
}}
""",
        )
    lines = ["general: {", f"\tadmin_key = {json.dumps(admin_key)}", "\tstring_ids = false", "}"]
    for room, settings in (rooms or {}).items():
        lines.append(f"room-{room}: {{")
        lines.extend(f"\t{key} = {_jcfg_value(value)}" for key, value in settings.items())
        lines.append("}")
    _write_private(directory / "janus.plugin.videoroom.jcfg", "\n".join(lines) + "\n")
    return directory / "janus.jcfg"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the thread that started it ends."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _get_json(url: str, body: dict[str, object] | None, timeout: float) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class JanusProcess:
    """A Janus gateway run in a folder of its own, on free 127.0.0.1 ports.

    `start` returns once GET /janus/info answers; `stop` sends SIGTERM, then SIGKILL. As a
    context manager it starts and always stops; a start interrupted (an error, Ctrl-C) stops the
    process it had begun before the interruption goes on.
    """

    def __init__(
        self,
        directory: Path,
        *,
        admin_key: str | None = None,
        websockets: bool = False,
        rooms: dict[int, dict[str, object]] | None = None,
        ice_interface: str | None = None,
        nat_1_1: str | None = None,
        binary: str = JANUS_BINARY,
        libraries: Path = JANUS_LIBRARIES,
        ready_timeout: float = 15.0,
        die_with_parent: bool = False,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.admin_key = admin_key if admin_key is not None else uuid.uuid4().hex
        self.websockets = websockets
        self.rooms = rooms
        self.ice_interface = ice_interface
        self.nat_1_1 = nat_1_1
        self.binary = binary
        self.libraries = libraries
        self.ready_timeout = ready_timeout
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.ws_port: int | None = None
        self.log_path = self.directory / "janus.log"

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"JanusProcess(directory={str(self.directory)!r}, url={self.url!r}, pid={pid})"

    @property
    def url(self) -> str:
        """The HTTP API's base URL (…/janus)."""
        return f"http://127.0.0.1:{self.http_port}/janus"

    @property
    def ws_url(self) -> str | None:
        """The WebSockets API's URL (subprotocol "janus-protocol"), or None without it."""
        return None if self.ws_port is None else f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def log_text(self) -> str:
        """What Janus wrote so far (its own log; it holds no secret)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, attempts: int = 3) -> dict[str, Any]:
        """Start Janus and wait until it answers; return its /janus/info.

        A port picked free can be taken before Janus binds it, so a failed start is tried again
        on new ports, up to attempts times.
        """
        if self.process is not None and self.process.poll() is None:
            raise RelayError("Janus is already running")
        if not janus_available(self.binary, self.libraries):
            raise RelayError(f"Janus or its videoroom plugin is not installed ({self.binary})")
        error: RelayError | None = None
        for _ in range(attempts):
            self.http_port = _free_port()
            self.ws_port = _free_port() if self.websockets else None
            config = self._write_config()
            try:  # the process is stopped whatever interrupts its start once it exists
                self._launch(config)
                info = self._wait_ready()
            except RelayError as exc:
                self.stop()
                error = exc
                continue
            except BaseException:
                self.stop()
                raise
            log.info(
                "Janus %s started (pid %d, %s)", info.get("version_string"), self.pid, self.url
            )
            return info
        assert error is not None
        raise error

    def _write_config(self) -> Path:
        """This gateway's config on its current ports; the janus.jcfg path."""
        return write_config(
            self.directory,
            http_port=self.http_port,
            admin_key=self.admin_key,
            ws_port=self.ws_port,
            rooms=self.rooms,
            ice_interface=self.ice_interface,
            nat_1_1=self.nat_1_1,
            libraries=self.libraries,
        )

    def _launch(self, config: Path) -> None:
        try:
            with open(self.log_path, "wb") as out:
                self.process = subprocess.Popen(  # noqa: PLW1509 - only when asked
                    [self.binary, "-C", str(config), "-F", str(self.directory), "-o"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.directory,
                    env={**os.environ, "TZ": "UTC"},
                    start_new_session=True,  # Ctrl-C reaches us; we stop Janus ourselves
                    preexec_fn=_die_with_parent if self.die_with_parent else None,
                )
        except OSError as exc:
            raise RelayError(f"Janus could not be started: {exc.strerror}") from exc

    def _wait_ready(self) -> dict[str, Any]:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RelayError(
                    f"Janus exited with {self.process.returncode} while starting; its log: "
                    f"{self.log_path}"
                )
            try:
                info = _get_json(f"{self.url}/info", None, 2.0)
                if isinstance(info, dict) and info.get("janus") == "server_info":
                    return info
            except (OSError, ValueError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise RelayError(
                    f"Janus did not answer {self.url}/info in {self.ready_timeout} s; its log: "
                    f"{self.log_path}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop Janus (SIGTERM, then SIGKILL after timeout s); return its exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            stop_process(process, "Janus", timeout)
            log.info("Janus (pid %d) stopped with %s", process.pid, process.returncode)
        return process.returncode

    def restart(self) -> dict[str, Any]:
        """Stop Janus and start it again on the same ports (its rooms and sessions are lost):
        what a gateway restarted under its clients looks like."""
        self.stop()
        config = self._write_config()
        try:
            self._launch(config)
            return self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def client(self, timeout: float = 10.0) -> VideoRoomClient:
        """A videoroom client of this gateway, holding its admin key."""
        return VideoRoomClient(self.url, admin_key=self.admin_key, timeout=timeout)

    def __enter__(self) -> JanusProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class VideoRoomClient:
    """A Janus session with a videoroom handle over the HTTP API: rooms and their recording.

    Janus ends a session after 60 s without a request: call `keepalive` more often than that
    when idle. Use as a context manager (or `connect` and `close`).
    """

    def __init__(self, url: str, *, admin_key: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._admin_key = admin_key
        self.timeout = timeout
        self.session: int | None = None
        self.handle: int | None = None
        self._secrets: set[str] = {admin_key} if admin_key else set()

    def __repr__(self) -> str:
        return f"VideoRoomClient(url={self.url!r}, session={self.session}, handle={self.handle})"

    def _scrub(self, text: str) -> str:
        for secret in tuple(self._secrets):  # other threads may add or drop one meanwhile
            text = text.replace(secret, "***")
        return text

    def _post(self, path: str, what: str, body: dict[str, object]) -> dict[str, Any]:
        """POST body to url[/path]; raise RelayError for a Janus error or no answer."""
        url = self.url + (f"/{path}" if path else "")
        try:
            reply = _get_json(url, {"transaction": uuid.uuid4().hex, **body}, self.timeout)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: Janus died mid-answer (IncompleteRead); ValueError: not JSON
            reason = getattr(exc, "reason", None) or exc
            raise RelayError(
                f"Janus {what}: no answer from {self.url}: {self._scrub(str(reason))}"
            ) from exc
        if not isinstance(reply, dict):
            raise RelayError(f"Janus {what}: unexpected answer")
        if reply.get("janus") == "error":
            error = reply.get("error") or {}
            raise RelayError(
                f"Janus {what} failed: error {error.get('code')}: "
                f"{self._scrub(str(error.get('reason')))}",
                error_code=error.get("code"),
            )
        return reply

    def connect(self) -> VideoRoomClient:
        """Create a session and attach the videoroom plugin."""
        reply = self._post("", "create session", {"janus": "create"})
        self.session = int(reply["data"]["id"])
        reply = self._post(str(self.session), "attach", {"janus": "attach", "plugin": VIDEOROOM})
        self.handle = int(reply["data"]["id"])
        log.debug("Janus session %d, videoroom handle %d", self.session, self.handle)
        return self

    def close(self) -> None:
        """Destroy the session (a gateway already gone is not an error)."""
        if self.session is None:
            return
        session, self.session, self.handle = self.session, None, None
        try:
            self._post(str(session), "destroy session", {"janus": "destroy"})
        except RelayError as exc:
            log.debug("Janus session %d not destroyed: %s", session, exc)

    def __enter__(self) -> VideoRoomClient:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def keepalive(self) -> None:
        """Keep the session alive (Janus ends it after 60 s without a request)."""
        if self.session is None:
            raise RelayError("Janus keepalive: not connected")
        self._post(str(self.session), "keepalive", {"janus": "keepalive"})

    def request(self, body: dict[str, object], secret: str | None = None) -> dict[str, Any]:
        """Send one synchronous videoroom request; return its plugindata.data.

        secret is the room's, added as "secret"; a videoroom error_code raises RelayError.
        """
        if self.session is None or self.handle is None:
            raise RelayError("Janus videoroom request: not connected")
        what = f"videoroom {body.get('request')}"
        if secret is not None:
            self._secrets.add(secret)
            body = {**body, "secret": secret}
        reply = self._post(
            f"{self.session}/{self.handle}", what, {"janus": "message", "body": body}
        )
        data = (reply.get("plugindata") or {}).get("data")
        if not isinstance(data, dict):
            raise RelayError(f"Janus {what}: answer without plugin data")
        if "error_code" in data:
            raise RelayError(
                f"Janus {what} failed: error_code {data['error_code']}: "
                f"{self._scrub(str(data.get('error')))}",
                error_code=data["error_code"],
            )
        log.debug("Janus %s: %s", what, data.get("videoroom"))
        return data

    def create_room(
        self,
        room: int | None,
        *,
        secret: str,
        lock_record: bool = True,
        publishers: int = 16,
        audiocodec: str = "opus",
        videocodec: str = "vp8",
        record: bool = False,
        rec_dir: Path | None = None,
        description: str | None = None,
        **settings: object,
    ) -> int:
        """Create a room (Janus picks the id when room is None); return its id.

        The room's secret guards edit, destroy and recording; with lock_record a publisher
        cannot start or stop its own recording without it.
        """
        body: dict[str, object] = {
            "request": "create",
            "publishers": publishers,
            "audiocodec": audiocodec,
            "videocodec": videocodec,
            "record": record,
            "lock_record": lock_record,
            "permanent": False,
            **settings,
        }
        if room is not None:
            body["room"] = room
        if rec_dir is not None:
            body["rec_dir"] = str(rec_dir)
        if description is not None:
            body["description"] = description
        if self._admin_key is not None:
            body["admin_key"] = self._admin_key
        data = self.request(body, secret)
        return int(data["room"])

    def destroy_room(self, room: int, *, secret: str) -> None:
        """Destroy a room; its participants are hung up."""
        self.request({"request": "destroy", "room": room, "permanent": False}, secret)
        if secret != self._admin_key:
            self._secrets.discard(secret)  # a destroyed room's secret is not kept forever

    def set_rec_dir(self, room: int, rec_dir: Path, *, secret: str) -> None:
        """Record the room's next recorders into rec_dir (Janus creates it when they open)."""
        self.request({"request": "edit", "room": room, "new_rec_dir": str(rec_dir)}, secret)

    def enable_recording(self, room: int, record: bool, *, secret: str) -> None:
        """Start (true) or stop (false) recording every publisher of the room."""
        self.request({"request": "enable_recording", "room": room, "record": record}, secret)

    def list_participants(self, room: int) -> list[dict[str, Any]]:
        """The room's participants: id, display, publisher, talking."""
        data = self.request({"request": "listparticipants", "room": room})
        participants: list[dict[str, Any]] = data.get("participants", [])
        return participants

    def list_rooms(self) -> list[dict[str, Any]]:
        """The rooms this client may see (with the admin key: all), with record and rec_dir."""
        body: dict[str, object] = {"request": "list"}
        if self._admin_key is not None:
            body["admin_key"] = self._admin_key
        rooms: list[dict[str, Any]] = self.request(body).get("list", [])
        return rooms
