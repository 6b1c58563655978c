"""`skymix demo` end to end: the sample session mixed, then delivered through the whole chain to
the SeaweedFS server and webhook receiver it starts (and stops) on 127.0.0.1; interrupted, it
stops them too; without SeaweedFS's weed it mixes and says how to get the rest."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import standardwebhooks

from mix_tools import read_recording, tile_chroma
from skymix.compose.color import rgb_to_yuv
from skymix.compose.labels import placeholder_color
from skymix.demo.delivery import LINK_EXPIRY_S, deliver_demo
from skymix.demo.receiver import WebhookReceiver
from skymix.demo.seaweed import Identity, SeaweedS3
from skymix.errors import DeliveryError

SCRIPT = Path(sys.executable).with_name("skymix")
STARTED = re.compile(r"SeaweedFS \(pid (\d+)\) starting on \S+, data in (\S+)")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_demo_mixes_delivers_and_checks_the_link(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    before = datetime.now(UTC)
    ran = subprocess.run(
        [SCRIPT, "-v", "demo", "--output", out, "--seconds", "8"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stderr
    assert "4 participants" in ran.stdout and f"the local MP4: {out}" in ran.stdout
    for name in ("ada", "grace", "linus", "margaret"):
        assert name in ran.stdout
    assert "sender reports" in ran.stdout  # the sync it applied

    # the link served exactly the local file (the demo fetched it while its store ran)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    fetched = re.search(r"link fetched: (\d+) bytes, SHA-256 ([0-9a-f]{64}) = ", ran.stdout)
    assert fetched is not None, ran.stdout
    assert (int(fetched[1]), fetched[2]) == (out.stat().st_size, sha)
    link = re.search(r"link \(expires (.+) UTC; .*\):\n +(http://127\.0\.0\.1:\d+/\S+)", ran.stdout)
    assert link is not None, ran.stdout
    expires = datetime.strptime(link[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert before < expires <= datetime.now(UTC) + timedelta(seconds=LINK_EXPIRY_S)
    assert "X-Amz-Signature=" in link[2] and "/skymix-demo/recordings/" in link[2]

    # the notification the receiver verified is this recording's LINK
    delivered = re.search(r"delivered: recording (\w+) is in LINK", ran.stdout)
    assert delivered is not None, ran.stdout
    verified = re.search(
        r"webhook (\S+): signature verified, state (\w+), recording (\w+)", ran.stdout
    )
    assert verified is not None, ran.stdout
    assert verified[1] == f"msg_{delivered[1]}_1"
    assert (verified[2], verified[3]) == ("LINK", delivered[1])
    assert "whsec_" not in ran.stdout + ran.stderr

    # both servers stopped, the store's folder removed
    started = STARTED.search(ran.stderr)
    assert started is not None, ran.stderr
    assert gone(int(started[1])) and not Path(started[2]).exists()
    assert "webhook receiver listening on" in ran.stderr

    # what was delivered is the mix: decode it
    report = json.loads(out.with_suffix(".json").read_text())
    rec = read_recording(out, report)
    assert len(rec.frames) == report["frames"] >= 8 * 30 - 15
    assert rec.frames[0][1].shape == (720, 1280)
    # grace turns her camera off from 2.4 s to 4.4 s: her tile shows her placeholder then
    during = next(i for i, f in enumerate(rec.frames) if f[0] >= 3.5)
    tile = rec.tiles_at(rec.frames[during][0])["grace"]
    assert not tile["video"]
    _, u, v = rgb_to_yuv(placeholder_color("grace"))
    got = tile_chroma(rec, during, "grace")
    assert abs(got[0] - u) < 30 and abs(got[1] - v) < 30
    after = next(i for i, f in enumerate(rec.frames) if f[0] >= 6.0)
    assert rec.tiles_at(rec.frames[after][0])["grace"]["video"]
    assert rec.audio.shape[1] > 7.5 * 48000


def test_ctrl_c_during_delivery_stops_both_servers(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [SCRIPT, "-v", "demo", "--output", tmp_path / "demo.mp4", "--seconds", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert demo.stderr is not None
    started = None
    try:
        for line in demo.stderr:  # ends when the demo does, at the latest
            started = started or STARTED.search(line)
            if "webhook receiver listening on" in line and started is not None:
                # the store held still: the delivery cannot finish before the signal lands
                os.kill(int(started[1]), signal.SIGSTOP)
                demo.send_signal(signal.SIGINT)
                time.sleep(0.5)
                os.kill(int(started[1]), signal.SIGCONT)
                break
        rest = demo.stderr.read()
        assert demo.wait(60) == 130
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert started is not None
    assert "cancelled by SIGINT" in rest and "SeaweedFS (pid" in rest and "stopped" in rest
    assert gone(int(started[1])) and not Path(started[2]).exists()


def test_without_weed_the_demo_mixes_and_says_how_to_deliver(tmp_path: Path) -> None:
    """A Python environment where skymix imports but no weed is installed (as after a plain
    ``pip install skymix``): this test's packages reached through a .pth, PATH without weed."""
    env_dir = tmp_path / "plain"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "ours.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
    )
    here = Path(sys.executable).parent
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not (Path(p) / "weed").exists()
    )
    assert Path(here / "weed").exists() and str(here) not in path.split(os.pathsep)
    out = tmp_path / "demo.mp4"
    ran = subprocess.run(
        [python, "-m", "skymix", "demo", "--output", out, "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path},
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "pip install 'skymix[demo]'" in ran.stdout
    assert "delivered:" not in ran.stdout and f"the local MP4: {out}" in ran.stdout
    report = json.loads(out.with_suffix(".json").read_text())
    rec = read_recording(out, report)
    assert len(rec.frames) == report["frames"] >= 2 * 30 - 15
    assert rec.audio.shape[1] > 1.5 * 48000


def post_signed(url: str, secret: str, body: str) -> int:
    stamp = datetime.now(UTC)
    signature = standardwebhooks.Webhook(secret).sign("msg_1", stamp, body)
    request = urllib.request.Request(
        url,
        data=body.encode(),
        headers={
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_receiver_keeps_verified_webhooks_and_refuses_forged_ones() -> None:
    secret = "whsec_" + base64.b64encode(b"demo-receiver-test-secret-0123456").decode()
    forged = "whsec_" + base64.b64encode(b"someone-else-s-secret-9876543210").decode()
    with WebhookReceiver(secret) as receiver:
        assert post_signed(receiver.url, forged, '{"state": "LINK"}') == 401
        assert post_signed(receiver.url, secret, '{"state": "LINK"}') == 204
        assert post_signed(receiver.url, secret, "[1, 2]") == 400  # signed, not a notification
        assert receiver.rejected == 1
        assert [(w.webhook_id, w.payload) for w in receiver.received] == [
            ("msg_1", {"state": "LINK"})
        ]
    with pytest.raises(urllib.error.URLError):  # stopped: the port is closed
        post_signed(receiver.url, secret, "{}")


def test_a_weed_that_exits_is_a_delivery_error(tmp_path: Path) -> None:
    server = SeaweedS3(
        tmp_path, "b", (Identity("KEY", "secret-Key-00001234"),), weed=Path("/bin/false")
    )
    with pytest.raises(DeliveryError, match="SeaweedFS exited with code 1"):
        server.start()
    assert server.proc is None


def test_a_failed_delivery_says_why_and_stops_both_servers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="skymix.demo")
    with pytest.raises(DeliveryError, match="went to ERROR: delivery_failed: .*gone.mp4"):
        deliver_demo(tmp_path / "gone.mp4")
    started = STARTED.search(caplog.text)
    assert started is not None, caplog.text
    assert gone(int(started[1])) and not Path(started[2]).exists()
    listening = re.search(r"webhook receiver listening on (\S+)", caplog.text)
    assert listening is not None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(listening[1], timeout=5)
