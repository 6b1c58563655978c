"""What browsers load from the service for live rooms (docs/live.md): ``/skymix.js`` (the ES
module of the JavaScript API) and its types ``/skymix.d.ts``; Janus's own ``janus.js`` and the
webrtc-adapter it needs, from their Debian packages (``libjs-janus-gateway``,
``libjs-webrtc-adapter``) under ``/vendor/``; and the demo page ``/demo`` for the application
``demo_app`` names, with that application's public key in it (never a secret: the page is
public).

The page's key comes from ``skymix.service.live.access``: the application's browser access, made
on first use with the service's own origin (``http://HOST:PORT`` of its configuration) allowed
when it has none. An application that has one keeps its origins: its operator adds the service's
(``skymix apps browser-access``). The origin is never taken from the request: its Host header is
the client's to choose.
"""

from __future__ import annotations

import html
import logging
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response

from ...errors import OptionsError
from ..live.access import get_access, set_access
from ..state import ServiceState

__all__ = ["VENDOR", "demo_page", "router", "service_origin"]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: The browser scripts of Debian's packages, by the name they are served under.
VENDOR: dict[str, tuple[Path, str]] = {
    "janus.js": (Path("/usr/share/javascript/janus-gateway/janus.js"), "libjs-janus-gateway"),
    "adapter.js": (Path("/usr/share/javascript/webrtc-adapter/adapter.js"), "libjs-webrtc-adapter"),
}

JAVASCRIPT = "text/javascript; charset=utf-8"
#: The demo page's placeholder for the public key.
KEY_PLACEHOLDER = "__SKYMIX_KEY__"
#: Browsers revalidate the scripts (a service upgrade changes them) and never keep the page.
REVALIDATE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
#: Customers' pages on their own origins import the module: module scripts load with CORS.
PUBLIC_SCRIPT = {**REVALIDATE, "Access-Control-Allow-Origin": "*"}
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _static(name: str) -> str:
    """A file of the package's ``static`` folder (package data: there in a wheel too)."""
    return (files("skymix.service") / "static" / name).read_text(encoding="utf-8")


@router.get("/skymix.js")
def skymix_js() -> Response:
    return Response(_static("skymix.js"), media_type=JAVASCRIPT, headers=PUBLIC_SCRIPT)


@router.get("/skymix.d.ts")
def skymix_types() -> Response:
    return Response(
        _static("skymix.d.ts"),
        media_type="application/typescript; charset=utf-8",
        headers=PUBLIC_SCRIPT,
    )


@router.get("/vendor/{name}")
def vendor(name: str) -> Response:
    """janus.js or adapter.js from its Debian package; 503 naming the package when missing."""
    if name not in VENDOR:
        raise HTTPException(404, "not found")
    path, package = VENDOR[name]
    try:
        body = path.read_bytes()
    except OSError:
        log.warning("%s is missing: install the Debian package %s", path, package)
        raise HTTPException(
            503, f"{name} is not installed on the service (Debian package {package})"
        ) from None
    return Response(body, media_type=JAVASCRIPT, headers=PUBLIC_SCRIPT)


def service_origin(state: ServiceState) -> str:
    """The origin of the service's own pages, from its configuration (an address to listen on
    everywhere becomes the loopback one, which a browser on the machine uses)."""
    host = state.config.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{state.config.port}"


def demo_page(state: ServiceState, app_id: str) -> str:
    """The demo page with ``app_id``'s public key (its browser access made if it has none)."""
    access = get_access(state, app_id)
    if access is None:
        access = set_access(state, app_id, [service_origin(state)])
        log.info("demo: application %s may now be used from %s", app_id, service_origin(state))
    return _static("demo.html").replace(KEY_PLACEHOLDER, html.escape(access.public_key))


@router.get("/demo")
def demo(request: Request) -> Response:
    """The demo page of ``demo_app``; 404 when the service serves no demo."""
    state: ServiceState = request.app.state.service
    app_id = state.config.demo_app
    if app_id is None:
        raise HTTPException(404, "this service serves no demo (see demo_app in docs/live.md)")
    try:
        page = demo_page(state, app_id)
    except OptionsError as error:  # the demo application does not exist
        log.warning("demo: %s", error)
        raise HTTPException(404, f"the demo application is not available: {error}") from None
    return Response(page, media_type="text/html; charset=utf-8", headers=NO_STORE)


@router.get("/demo/{name}")
def demo_file(name: str, request: Request) -> Response:
    """The demo page's script and style sheet."""
    state: ServiceState = request.app.state.service
    if state.config.demo_app is None:
        raise HTTPException(404, "this service serves no demo")
    if name == "demo.js":
        return Response(_static("demo.js"), media_type=JAVASCRIPT, headers=REVALIDATE)
    if name == "demo.css":
        return Response(
            _static("demo.css"), media_type="text/css; charset=utf-8", headers=REVALIDATE
        )
    raise HTTPException(404, "not found")
