"""The `skymix` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import SkymixError
from .progress import TerminalProgress

__all__ = ["build_parser", "main"]


class _Version(argparse.Action):
    """argparse's version action with the version looked up only when asked for."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from . import __version__

        print(f"skymix {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skymix",
        description="Composite and mix the RTP a WebRTC media relay captured into one recording.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="mix a sample session into an MP4",
        description="Synthesize a sample four-party relay capture (late joiner, leaver, camera "
        "off, loss, senders' clocks apart) and mix it into an MP4, like any capture.",
    )
    demo.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("skymix-demo.mp4"),
        help="where to write the MP4 (default: %(default)s)",
    )
    demo.add_argument("--seconds", type=float, default=12.0, help="length (default: %(default)s)")
    inspect = sub.add_parser(
        "inspect",
        help="show who and what is in a capture",
        description="Read captures (pcap, pcapng, rtpdump, Janus .mjr) and report each "
        "participant's streams: codec, resolution, packets, loss, frames, sync, damage.",
    )
    _capture_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    mixer = sub.add_parser(
        "mix",
        help="composite and mix captures into one recording",
        description="Read a room's captures, lay out every participant's video, mix their "
        "audio in sync on the relay's clock and encode an MP4 (H.264 + AAC) or WebM.",
    )
    _capture_arguments(mixer)
    mixer.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the recording (.mp4, or .webm for VP9 + Opus)",
    )
    mixer.add_argument(
        "--layout",
        default="grid",
        metavar="grid|speaker|pip|FILE.json",
        help="tile layout, or a custom layout file (docs/layouts.md)",
    )
    mixer.add_argument("--size", default="1280x720", metavar="WxH")
    mixer.add_argument("--fps", type=int, default=30)
    mixer.add_argument("--crf", type=int, default=23)
    mixer.add_argument("--preset", default="veryfast", help="x264 preset")
    mixer.add_argument("--threads", type=int, default=0, help="encoder threads (0: automatic)")
    mixer.add_argument("--fit", choices=["contain", "cover"], default="contain")
    mixer.add_argument("--gap", type=int, default=0, help="pixels between tiles (even)")
    mixer.add_argument(
        "--on-loss",
        choices=["freeze", "placeholder"],
        default="freeze",
        help="after video loss: hold the last picture or show the placeholder",
    )
    mixer.add_argument(
        "--trim", action="store_true", help="leave out the stretches in which nobody is present"
    )
    mixer.add_argument("--no-labels", action="store_true", help="no names on the tiles")
    mixer.add_argument(
        "--per-participant",
        type=Path,
        metavar="DIR",
        help="also write each participant on their own into DIR",
    )
    mixer.add_argument(
        "--channels",
        type=Path,
        metavar="FILE.wav",
        help="also write a WAV with one channel per participant",
    )
    mixer.add_argument(
        "--report",
        type=Path,
        metavar="FILE.json",
        help="write what was done (participants, tiles, sync, concealment)",
    )
    synth = sub.add_parser(
        "synth",
        help="write a synthetic relay capture (pcap + SDPs + truth) with chosen impairments",
        description="Encode and packetize a made-up call with real codecs, send it through an "
        "impaired network with sender clocks of their own, and write the relay's capture.",
    )
    synth.add_argument("output", type=Path, help="folder for the pcap, SDPs and truth JSON")
    synth.add_argument("--participants", type=int, default=3)
    synth.add_argument("--seconds", type=float, default=10.0)
    synth.add_argument("--loss", type=float, default=0.0, help="packet loss probability")
    synth.add_argument(
        "--burst",
        type=int,
        default=0,
        help="packets lost in a row once every --burst-every seconds",
    )
    synth.add_argument("--burst-every", type=float, default=5.0)
    synth.add_argument("--reorder", type=float, default=0.0, help="probability of reordering")
    synth.add_argument("--duplicate", type=float, default=0.0, help="probability of duplicates")
    synth.add_argument("--jitter-ms", type=float, default=0.0, help="mean extra network delay")
    synth.add_argument("--drop-first-keyframe", action="store_true")
    synth.add_argument(
        "--rtx", action="store_true", help="retransmit lost video packets on RFC 4588 RTX streams"
    )
    synth.add_argument("--seed", type=int, default=1)
    return parser


def _capture_arguments(parser: argparse.ArgumentParser) -> None:
    """The captures and their session description, as inspect and mix take them."""
    parser.add_argument("captures", nargs="+", type=Path, metavar="CAPTURE")
    parser.add_argument(
        "--sdp",
        action="append",
        default=[],
        metavar="[NAME=]FILE",
        help="one SDP per participant, in order (repeat)",
    )
    parser.add_argument("--manifest", type=Path, help="JSON manifest (docs/manifest.schema.json)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. Exit codes: 0 done, 1 failed, 2 usage; SIGINT and SIGTERM clean up like a
    failure and end with 128 + the signal's number (130, 143)."""
    from .errors import CancelledError
    from .outputs import cancel_on_signals, check_job

    try:
        with cancel_on_signals() as cancellation:
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return 2
            if args.command == "demo":
                from .demo import run_demo

                check_job([], args.output, report=args.output.with_suffix(".json"))
                report = run_demo(args.output, seconds=args.seconds, progress=TerminalProgress())
                print(report.summary())
                print(f"  report: {args.output.with_suffix('.json').resolve()}")
            elif args.command == "inspect":
                from .inspect import format_scan
                from .session import load_description
                from .streams.room import scan_room

                description = load_description(args.sdp, args.manifest)
                scan = scan_room(args.captures, description, progress=TerminalProgress())
                if args.json:
                    print(json.dumps(scan.to_json(), indent=2))
                else:
                    print(format_scan(scan))
            elif args.command == "mix":
                check_job(  # every input and output the command line names, before any work
                    args.captures,
                    args.output,
                    report=args.report,
                    channels=args.channels,
                    per_participant=args.per_participant,
                    sdps=[  # "NAME=FILE" unless the whole argument is a file (load_description)
                        sdp if "=" not in sdp or Path(sdp).exists() else sdp.partition("=")[2]
                        for sdp in args.sdp
                    ],
                    manifest=args.manifest,
                    layout=None if args.layout in ("grid", "speaker", "pip") else args.layout,
                )
                _mix(args)
            elif args.command == "synth":
                from .synth import Impairments, preset, synthesize

                imp = Impairments(
                    loss=args.loss,
                    burst_every_s=args.burst_every if args.burst else None,
                    burst_packets=args.burst,
                    reorder=args.reorder,
                    duplicate=args.duplicate,
                    jitter_ms=args.jitter_ms,
                    drop_first_keyframe=args.drop_first_keyframe,
                    rtx=args.rtx,
                )
                made = synthesize(
                    preset(args.participants, args.seconds),
                    args.seconds,
                    args.output,
                    impairments=imp,
                    seed=args.seed,
                )
                print(f"wrote {made.packets} packets to {made.pcap}")
                for sdp in made.sdps:
                    print(f"  --sdp {sdp}")
                print(f"truth: {made.truth}")
    except KeyboardInterrupt:  # SIGINT just before its handler was installed or after
        print("skymix: cancelled by SIGINT", file=sys.stderr)
        return 130
    except CancelledError as exc:
        print(f"skymix: {exc}", file=sys.stderr)
        return cancellation.exit_code if cancellation.signal is not None else 1
    except SkymixError as exc:
        print(f"skymix: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`skymix inspect ... | head`): not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # an output that cannot be written, a folder that is not there
        print(f"skymix: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _mix(args: argparse.Namespace) -> None:
    from . import layout as layouts
    from .encode import Container, EncodeSettings
    from .job import mix
    from .mix import MixOptions
    from .session import load_description

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise SkymixError(f"--size must be WxH, got {args.size!r}") from None
    spec: layouts.LayoutSpec
    if args.layout == "grid":
        spec = layouts.GridSpec(gap=args.gap, fit=args.fit)
    elif args.layout == "speaker":
        spec = layouts.SpeakerSpec(gap=args.gap, fit=args.fit)
    elif args.layout == "pip":
        spec = layouts.PipSpec(fit=args.fit)
    else:
        spec = layouts.load_custom_layout(args.layout)
    container: Container = "webm" if args.output.suffix.lower() == ".webm" else "mp4"
    options = MixOptions(
        layout=spec,
        encode=EncodeSettings(
            width=width,
            height=height,
            fps=args.fps,
            crf=args.crf,
            preset=args.preset,
            threads=args.threads,
        ),
        container=container,
        on_loss=args.on_loss,
        trim=args.trim,
        labels=not args.no_labels,
        per_participant=args.per_participant,
        channels=args.channels,
    )
    description = load_description(args.sdp, args.manifest)
    report = mix(
        args.captures,
        args.output,
        description=description,
        options=options,
        progress=TerminalProgress(),
    )
    if args.report:
        report.write(args.report)
    print(report.summary())
