"""The package builds into a complete wheel and its console script works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import skymix

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("skymix")


def test_console_script_version_and_help():
    version = subprocess.run([SCRIPT, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"skymix {skymix.__version__}"
    assert skymix.__version__ != "0+unknown"
    helped = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, check=True)
    assert "usage: skymix" in helped.stdout and "demo" in helped.stdout
    bare = subprocess.run([SCRIPT], capture_output=True, text=True, check=False)
    assert bare.returncode == 2 and "usage: skymix" in bare.stdout


def test_wheel_is_complete_and_works_outside_the_source_tree(tmp_path):
    """Build the wheel the way `pip install .` does, install it alone and use it."""
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "build",
            "*.so",
            "*.c",
            "*.egg-info",
            "__pycache__",
            ".benchmarks",
            ".hypothesis",
            ".pytest_cache",
            "*.mp4",
        ),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, src], check=True
    )
    (wheel,) = wheels.glob("skymix-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("composite", "mix"):
        assert any(n.startswith(f"skymix/_native/{module}.") and n.endswith(".so") for n in names)
        assert f"skymix/_native/{module}.pyi" in names
    assert "skymix/py.typed" in names
    assert not any(n.endswith((".pyx", ".c")) for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, wheel],
        check=True,
    )
    probe = (
        "import skymix, numpy as np\n"
        "out = tuple(np.zeros(s, np.uint8) for s in ((4, 4), (2, 2), (2, 2)))\n"
        "skymix.composite([], out, background=(255, 255, 255))\n"
        "mixed = np.zeros(4, np.float32)\n"
        "skymix.mix_audio([np.full(4, 0.25, np.float32)], mixed)\n"
        "print(skymix.__file__, int(out[0][0, 0]), float(mixed[0]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    path, luma, sample = ran.stdout.split()
    assert Path(path).is_relative_to(target)
    assert (int(luma), float(sample)) == (235, 0.25)
