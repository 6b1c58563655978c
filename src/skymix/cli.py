"""The `skymix` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import SkymixError
from .progress import TerminalProgress

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skymix",
        description="Composite and mix the RTP a WebRTC media relay captured into one recording.",
    )
    parser.add_argument("--version", action="version", version=f"skymix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="mix a generated sample session into an MP4",
        description="Generate a sample four-party session, composite and mix it, encode an MP4.",
    )
    demo.add_argument("-o", "--output", type=Path, default=Path("skymix-demo.mp4"),
                      help="where to write the MP4 (default: %(default)s)")
    demo.add_argument("--seconds", type=float, default=6.0, help="length (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            from .demo import run_demo

            result = run_demo(args.output, seconds=args.seconds, progress=TerminalProgress())
            print(result.summary())
    except SkymixError as exc:
        print(f"skymix: error: {exc}", file=sys.stderr)
        return 1
    return 0
