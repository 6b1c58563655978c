"""Live rooms in real Chromium: runs the browser scenarios (tests/browser/) in a user + network
namespace of their own, where ICE between Chromium and Janus can use a bridge interface instead of
loopback, which both refuse.

The inner run is an ordinary pytest session (tests/browser/conftest.py has its fixtures); this
test passes when it does and shows its output when it does not. Its artifacts (the linked MP4s,
the demo page's screenshot, console and service logs) go to SKYMIX_BROWSER_ARTIFACTS when set
(CI keeps that folder), else to this test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INNER = ["tests/browser/ice.py", "tests/browser/scenarios.py"]
BOUND_S = 600  # keeps a hung browser from hanging the suite; no speed requirement


def test_live_rooms_in_chromium(tmp_path: Path) -> None:
    artifacts = Path(os.environ.get("SKYMIX_BROWSER_ARTIFACTS") or tmp_path / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SKYMIX_"))}
    env.update(
        {
            "SKYMIX_BROWSER_INSIDE": "1",
            "SKYMIX_BROWSER_ARTIFACTS": str(artifacts),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    command = ["unshare", "--user", "--map-root-user", "--net", "--kill-child", "--"]
    command += [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"]
    command += ["--basetemp", str(tmp_path / "inner"), *INNER]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group this test started
        output, _ = process.communicate()
    text = output.decode(errors="replace")
    (artifacts / "inner-pytest.log").write_text(text)
    assert process.returncode == 0, f"browser scenarios failed ({process.returncode}):\n{text}"
    shutil.rmtree(tmp_path / "inner")  # 200 MB of fake media and the service's data
