"""Stopping a child process the way every server skymix starts is stopped (SeaweedFS for the
demo, Janus for the relay; the tests' servers too): SIGTERM, a bounded wait, then SIGKILL."""

from __future__ import annotations

import logging
import subprocess

__all__ = ["stop_process"]

log = logging.getLogger(__name__)


def stop_process(process: subprocess.Popen[bytes], name: str, timeout_s: float = 10.0) -> int:
    """Stop ``process`` (SIGTERM; SIGKILL if it is still there after ``timeout_s``) and return
    its exit status; a process that already ended is only reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s (pid %d) ignored SIGTERM for %s s: killed", name, process.pid, timeout_s
            )
            process.kill()
            process.wait()
    return process.returncode
