"""How a recording is made, as data: MixOptions, read from and written to JSON, with its schema.

The command line and the REST API share this one mapping: each builds a JSON-like dict (the
command line from its flags) and validates it here; nothing out of range is clamped or replaced,
every problem is an OptionsError naming the field (``encode.crf``) and saying what is allowed
("crf must be 1-51 (...), got 1000"). A layout file that cannot be used is a DescriptionError
naming the file and the JSON path inside it, as when it is loaded by itself.

The JSON document (docs/options.schema.json, docs/mixing.md)::

    {"layout": "grid", "size": "1280x720", "fps": 30,
     "encode": {"crf": 23, "preset": "veryfast"}, "threads": 0, "container": "mp4", ...}

``layout`` is "grid", "speaker" or "pip", a custom layout file's path, or an object with one
key, the layout's kind, holding its settings (``{"speaker": {"strip": "right"}}``, ``{"custom":
{"regions": [...]}}``). In Python, MixOptions keeps the runtime objects the job driver reads:
``options.layout`` is a LayoutSpec, ``options.encode`` an EncodeSettings (both may be passed to
the constructor as before).

estimate_memory() adds up what a job holds in frames (measured in docs/performance.md) and
check_memory() refuses, before any work, a job that would not fit in the memory available: a
request for a huge picture fails in milliseconds instead of meeting the kernel's OOM killer.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import (
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    ValidationError,
    model_validator,
)

from .decode import OUTPUT_RATE
from .encode import (
    LIMITS,
    MAX_HEIGHT,
    MAX_WIDTH,
    VIDEO_QUEUE,
    X264_PRESETS,
    EncodeSettings,
    range_problem,
    size_problem,
)
from .errors import DescriptionError, JobTooLargeError, OptionsError
from .jsondoc import (
    JsonDocument,
    json_enum,
    json_fraction,
    json_int,
    parse_document,
    problem,
    shown,
    validation_problems,
)
from .layout import (
    Aspect,
    Color,
    CustomSpec,
    GridSpec,
    LayoutDocument,
    LayoutDocumentError,
    LayoutSpec,
    PipSpec,
    SpeakerSpec,
    check_on_canvas,
    custom_document,
    custom_spec,
    load_custom_layout,
)

if TYPE_CHECKING:
    from .streams.room import RoomScan

__all__ = [
    "EncodeOptions",
    "MixOptions",
    "ThreadPlan",
    "available_memory",
    "cameras",
    "check_memory",
    "estimate_memory",
    "options_json_schema",
]

_log = logging.getLogger(__name__)

_MB = 1 << 20


# --- fields ------------------------------------------------------------------------------------


def _ranged(name: str) -> Any:
    """An integer setting within LIMITS[name], refused with the range in the message."""
    low, high, why = LIMITS[name]

    def check(value: object) -> int:
        bad = range_problem(name, value)
        if bad is not None:
            raise problem(bad)
        return cast(int, value)

    schema = Annotated[int, Field(ge=low, le=high, description=why or None)]
    return Annotated[int, PlainValidator(check, json_schema_input_type=schema)]


def _check_preset(value: object) -> str:
    if not isinstance(value, str) or value not in X264_PRESETS:
        raise problem(f"preset must be one of {', '.join(X264_PRESETS)}, got {shown(value)}")
    return value


def _check_size(value: object) -> tuple[int, int]:
    if isinstance(value, str):
        try:
            width, height = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise problem(
                f'size must be "WIDTHxHEIGHT" such as "1280x720", got {shown(value)}'
            ) from None
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        width, height = value
    else:
        raise problem(f'size must be "WIDTHxHEIGHT" or [width, height], got {shown(value)}')
    bad = size_problem(width, height)
    if bad is not None:
        raise problem(bad)
    return width, height


_Size = Annotated[
    tuple[int, int],
    PlainValidator(
        _check_size,
        json_schema_input_type=Annotated[
            str,
            Field(
                pattern=r"^[0-9]+[xX][0-9]+$",
                examples=["1280x720"],
                description=f"WIDTHxHEIGHT, even, 16x16 to {MAX_WIDTH}x{MAX_HEIGHT}",
            ),
        ]
        | Annotated[list[int], Field(min_length=2, max_length=2, title="[width, height]")],
    ),
    PlainSerializer(lambda size: f"{size[0]}x{size[1]}", return_type=str),
]
_Preset = Annotated[
    str, PlainValidator(_check_preset, json_schema_input_type=Literal[X264_PRESETS])
]


def _check_path(value: object) -> Path | None:
    if value is None or isinstance(value, Path):
        return value
    if isinstance(value, str) and value:
        return Path(value)
    raise problem(f"expected a path (a non-empty string) or null, got {shown(value)}")


_OptionalPath = Annotated[
    Path | None,
    PlainValidator(_check_path, json_schema_input_type=Annotated[str, Field(min_length=1)] | None),
    PlainSerializer(lambda p: None if p is None else str(p), return_type=str | None),
]


# --- layouts by name and settings --------------------------------------------------------------

_Fit = json_enum("contain", "cover")
_Gap = json_int(0, even=True)


class GridDocument(JsonDocument):
    """The grid's settings (GridSpec)."""

    gap: _Gap = Field(0, description="Pixels between tiles and at the edges; even.")  # type: ignore[valid-type]
    aspect: Aspect = (16, 9)
    fit: _Fit = "contain"  # type: ignore[valid-type]
    background: Color = (0, 0, 0)
    video_only: StrictBool = False


class SpeakerDocument(GridDocument):
    """The active-speaker layout's settings (SpeakerSpec)."""

    strip: json_enum("bottom", "right") = "bottom"  # type: ignore[valid-type]
    strip_size: json_fraction(True, 0.5) = 0.2  # type: ignore[valid-type]
    min_scale: json_fraction(True, 1.0) = 0.5  # type: ignore[valid-type]


class PipDocument(JsonDocument):
    """The picture-in-picture layout's settings (PipSpec)."""

    corner: json_enum("top-left", "top-right", "bottom-left", "bottom-right") = (  # type: ignore[valid-type]
        "bottom-right"
    )
    size: json_fraction(True, 1.0) = 0.25  # type: ignore[valid-type]
    margin: _Gap = 16  # type: ignore[valid-type]
    main: json_enum("speaker", "first") = "speaker"  # type: ignore[valid-type]
    aspect: Aspect = (16, 9)
    fit: _Fit = "contain"  # type: ignore[valid-type]
    background: Color = (0, 0, 0)
    video_only: StrictBool = False


class LayoutChoice(JsonDocument):
    """A layout with its settings: exactly one of the properties."""

    grid: GridDocument | None = None
    speaker: SpeakerDocument | None = None
    pip: PipDocument | None = None
    custom: LayoutDocument | None = None

    @model_validator(mode="after")
    def _one(self) -> LayoutChoice:
        given = [
            name for name in ("grid", "speaker", "pip", "custom") if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise problem(
                "expected exactly one of grid, speaker, pip, custom, got "
                + (", ".join(given) if given else "none")
            )
        return self


_SPECS: dict[str, type[GridSpec] | type[SpeakerSpec] | type[PipSpec]] = {
    "grid": GridSpec,
    "speaker": SpeakerSpec,
    "pip": PipSpec,
}


#: False while from_json(layout_files=False) validates (a context variable: MixOptions overrides
#: __init__, through which pydantic then validates without passing a validation context).
_LAYOUT_FILES: ContextVar[bool] = ContextVar("skymix_layout_files", default=True)


def _check_layout(value: object) -> LayoutSpec:
    if isinstance(value, (GridSpec, SpeakerSpec, PipSpec, CustomSpec)):
        return value
    if isinstance(value, str):
        if value in _SPECS:
            return _SPECS[value]()
        if not value:
            raise problem('expected "grid", "speaker", "pip", a layout file or an object')
        if not _LAYOUT_FILES.get():
            raise problem(
                f'a layout file is not taken here, got {shown(value)}: give "grid", "speaker", '
                '"pip" or the layout itself ({"custom": {"regions": [...]}})'
            )
        return load_custom_layout(value)  # DescriptionError naming the file
    if not isinstance(value, dict):
        raise problem(
            f'expected "grid", "speaker", "pip", a layout file or an object, got {shown(value)}'
        )
    if set(value) == {"custom"}:
        try:
            return custom_spec(value["custom"])
        except LayoutDocumentError as exc:
            raise problem(exc.message, "." + f"custom.{exc.path}".rstrip(".")) from None
    try:
        choice = LayoutChoice.model_validate(value)
    except ValidationError as exc:
        path, message = validation_problems(exc)[0]
        raise problem(message, f".{path}" if path else "") from None
    for name, spec_type in _SPECS.items():
        doc = getattr(choice, name)
        if doc is not None:
            return spec_type(**{f.name: getattr(doc, f.name) for f in fields(spec_type)})
    raise AssertionError("LayoutChoice holds one layout")


def _layout_json(spec: LayoutSpec) -> object:
    """A LayoutSpec as the shortest JSON that gives it back: a name for the defaults."""
    if isinstance(spec, CustomSpec):
        return {"custom": custom_document(spec)}
    name = next(n for n, t in _SPECS.items() if type(spec) is t)
    default = asdict(_SPECS[name]())
    changed = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in asdict(spec).items()
        if default[k] != v
    }
    return {name: changed} if changed else name


_Layout = Annotated[
    GridSpec | SpeakerSpec | PipSpec | CustomSpec,
    PlainValidator(
        _check_layout,
        json_schema_input_type=Literal["grid", "speaker", "pip"]
        | Annotated[str, Field(title="a custom layout file", min_length=1)]
        | LayoutChoice,
    ),
    PlainSerializer(_layout_json),
]


# --- the options ---------------------------------------------------------------------------------


class EncodeOptions(JsonDocument):
    """How the recording is encoded (besides its size and rate)."""

    crf: _ranged("crf") = 23  # type: ignore[valid-type]
    preset: Annotated[_Preset, Field(description="x264's preset (WebM recordings ignore it).")] = (
        "veryfast"
    )
    audio_bitrate: _ranged("audio_bitrate") = 128_000  # type: ignore[valid-type]
    audio_channels: _ranged("audio_channels") = 2  # type: ignore[valid-type]
    video: Annotated[StrictBool, Field(description="Write a video stream.")] = True
    audio: Annotated[StrictBool, Field(description="Write an audio stream.")] = True


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    """How the job's thread budget is spent: threads per video decoder (slice threads), for the
    compositor's kernel, and for the video encoder (0: x264 decides, about 1.5 per core)."""

    decode: int
    compose: int
    encode: int


class MixOptions(JsonDocument):
    """How to lay out, conceal and encode a recording.

    layout: grid, speaker, pip or custom regions (a LayoutSpec). size, fps: the recording's.
    encode: crf, preset, audio bitrate and channels, which streams. threads: one budget for the
    whole job so that several jobs share a machine without oversubscribing it (0: automatic).
    on_loss: after a video loss, hold the last good picture ("freeze") or show the placeholder
    ("placeholder") until the next keyframe. trim: leave out the stretches in which nobody is
    present. labels: draw each participant's display name on their tile. per_participant: a
    folder for a recording of each participant on their own; channels: a WAV with one channel
    per participant (both from the same decode as the mix).

    Made from JSON with from_json() or from Python as before (``MixOptions(layout=SpeakerSpec(),
    encode=EncodeSettings(width=640, height=360))``); either way a bad value raises OptionsError
    (or DescriptionError for a layout file), never pydantic's ValidationError.
    """

    model_config = ConfigDict(title="skymix mix options")

    layout: _Layout = Field(
        default_factory=GridSpec,
        description='"grid", "speaker", "pip", a custom layout file, or {kind: settings}.',
    )
    size: _Size = Field(
        "1280x720", validate_default=True, description="The recording's picture, WIDTHxHEIGHT."
    )
    fps: _ranged("fps") = Field(30, description="Frames per second.")  # type: ignore[valid-type]
    encoding: EncodeOptions = Field(EncodeOptions(), alias="encode")  # frozen: safe to share
    container: json_enum("mp4", "webm") = Field(  # type: ignore[valid-type]
        "mp4", description="mp4: H.264 + AAC; webm: VP9 + Opus."
    )
    threads: _ranged("threads") = Field(  # type: ignore[valid-type]
        0, description="Threads for the whole job: decoders, compositor, encoder (0: automatic)."
    )
    on_loss: json_enum("freeze", "placeholder") = "freeze"  # type: ignore[valid-type]
    trim: StrictBool = Field(False, description="Leave out the stretches nobody is present in.")
    labels: StrictBool = Field(True, description="Names on the tiles.")
    per_participant: _OptionalPath = Field(
        None, description="A folder for each participant's own recording."
    )
    channels: _OptionalPath = Field(
        None, description="A WAV file with one channel per participant."
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _options_error(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _from_settings(cls, data: object) -> object:
        """An EncodeSettings given as ``encode`` (the Python API) becomes size, fps, threads and
        the encode section; its audio rate must be the mix's."""
        if isinstance(data, dict) and isinstance(data.get("encode"), EncodeSettings):
            s: EncodeSettings = data["encode"]
            if s.audio and s.audio_rate != OUTPUT_RATE:
                raise problem(
                    f"audio_rate must be {OUTPUT_RATE} (the mix places audio at {OUTPUT_RATE} "
                    f"Hz, what every decoder gives), got {s.audio_rate}",
                    ".encode.audio_rate",
                )
            data = {
                **data,
                "size": (s.width, s.height),
                "fps": s.fps,
                "threads": s.threads,
                "encode": {
                    "crf": s.crf,
                    "preset": s.preset,
                    "audio_bitrate": s.audio_bitrate,
                    "audio_channels": s.audio_channels,
                    "video": s.video,
                    "audio": s.audio,
                },
            }
        return data

    @model_validator(mode="after")
    def _fits_together(self) -> MixOptions:
        e = self.encoding
        if not (e.video or e.audio):
            raise problem("a recording needs video, audio or both", ".encode.video")
        if e.video:
            check_on_canvas(self.layout, self.size)  # OptionsError or DescriptionError
        return self

    # -- what the job driver reads --------------------------------------------------------------

    @property
    def encode(self) -> EncodeSettings:
        """The recording's encoder settings (the threads of the plan's encoder)."""
        e = self.encoding
        return EncodeSettings(
            width=self.size[0],
            height=self.size[1],
            fps=self.fps,
            crf=e.crf,
            preset=e.preset,
            threads=self.thread_plan.encode,
            audio_rate=OUTPUT_RATE,
            audio_channels=e.audio_channels,
            audio_bitrate=e.audio_bitrate,
            video=e.video,
            audio=e.audio,
        )

    @property
    def thread_plan(self) -> ThreadPlan:
        """The threads budget shared out. The video encoder is most of a job's CPU (x264 ~75%
        of it at 720p veryfast, docs/performance.md), so it gets the budget; decoding (on the
        driver's decode thread) and compositing (on the caller's) take one thread each beside
        it, their kernels single-threaded: with several jobs per machine, each job then uses
        about its budget plus a tenth of a core. 0 keeps x264's automatic choice."""
        return ThreadPlan(decode=1, compose=1, encode=self.threads)

    # -- JSON -------------------------------------------------------------------------------------

    @classmethod
    def from_json(
        cls, data: str | bytes | dict[str, Any], *, layout_files: bool = False
    ) -> MixOptions:
        """Options from a JSON document (text or already decoded); OptionsError naming the field
        at the first problem (DescriptionError for a layout file).

        A layout given as a file path is refused unless ``layout_files``: a service taking
        documents from clients reads no file of its own machine for them (layouts come inline);
        the command line, whose user names their own files, allows them."""
        document = parse_document(data) if isinstance(data, (str, bytes)) else data
        token = _LAYOUT_FILES.set(layout_files)
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise _options_error(exc) from None
        finally:
            _LAYOUT_FILES.reset(token)

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-ready dict that from_json() turns back into equal options."""
        return cast(dict[str, Any], self.model_dump(mode="json", by_alias=True))


def _options_error(exc: ValidationError) -> Exception:
    """The exception for the first problem: a layout file's own DescriptionError (naming the
    file), else an OptionsError naming the field."""
    cause = (exc.errors(include_url=False)[0].get("ctx") or {}).get("error")
    if isinstance(cause, DescriptionError):
        return cause
    path, message = validation_problems(exc)[0]
    return OptionsError(message, field=path or None)


def options_json_schema() -> dict[str, Any]:
    """The JSON Schema of MixOptions documents (docs/options.schema.json)."""
    schema = MixOptions.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --- memory --------------------------------------------------------------------------------------

#: Memory of the process before the recording: the interpreter, NumPy, PyAV's FFmpeg libraries,
#: aiortc, and the first pass's per-stream state (66 MB after the imports, measured; the first pass
#: of a 9-party hour adds ~50 MB).
BASE_BYTES = 120 * _MB
#: x264's memory apart from frames (its tables and bitstream buffers), measured at 360p and 720p.
X264_FIXED_BYTES = 10 * _MB
#: x264's memory in output frames (w x h x 1.5 bytes) with one thread, per preset: lookahead,
#: B-frames, references, half-pel planes and lowres copies, with the writer's sync-lookahead of
#: SYNC_LOOKAHEAD frames (measured with RecordingWriter at 640x360 and 1280x720, FFmpeg 8.1's
#: x264: e.g. veryfast 59, medium 151). Each further frame thread holds ~16 more.
X264_FRAMES = {
    "ultrafast": 9,
    "superfast": 36,
    "veryfast": 59,
    "faster": 88,
    "fast": 121,
    "medium": 151,
    "slow": 188,
    "slower": 236,
    "veryslow": 294,
    "placebo": 560,
}
X264_FRAMES_PER_THREAD = 16
#: Decoded pictures held per participant: a batch being composited and the next being decoded
#: (job.BATCH_TICKS + job.DECODE_AHEAD = 8) and the decoder's references (VP8 3, more for H.264:
#: 4 on average), each of the camera's size.
PICTURES_PER_PARTICIPANT = 12
#: Per participant besides the pictures: audio decoder, sample buffers, clock windows, labels.
PARTICIPANT_BYTES = 2 * _MB
#: The camera assumed when only the number of participants is known: WebRTC's common largest.
DEFAULT_CAMERA = (1280, 720)
#: Per-participant recordings are at most this size, one x264 thread each (sidecars).
SIDECAR_SIZE = (640, 360)


def _frame_bytes(width: int, height: int) -> int:
    return width * height * 3 // 2


def _x264_bytes(width: int, height: int, preset: str, threads: int) -> int:
    if threads == 0:  # x264's own choice: 1.5 per core, at most one per two macroblock rows
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        threads = max(1, min(cores * 3 // 2, math.ceil(height / 16) // 2, 128))
    frames = X264_FRAMES[preset] + X264_FRAMES_PER_THREAD * (threads - 1)
    return X264_FIXED_BYTES + frames * _frame_bytes(width, height)


def cameras(scan: RoomScan) -> list[tuple[int, int]]:
    """Each participant's largest picture in the first pass (keyframe sizes), for
    estimate_memory(): DEFAULT_CAMERA for video whose size was not seen, (0, 0) without video."""
    out = []
    for p in scan.participants:
        videos = [s for s in p.streams if s.kind == "video"]
        sizes = [(w, h) for s in videos for st in s.stats.values() for _, w, h in st.resolutions]
        largest = max(sizes, key=lambda size: size[0] * size[1], default=None)
        out.append(largest or (DEFAULT_CAMERA if videos else (0, 0)))
    return out


def estimate_memory(options: MixOptions, participants: int | Sequence[tuple[int, int]]) -> int:
    """Bytes a job is expected to hold at its peak: the process itself, the writer's frame pool
    and x264's frames (by size, preset, threads), each participant's decoded pictures (by
    camera size: DEFAULT_CAMERA when only their number is given), per-participant recordings.

    Calibrated on the measurements in docs/performance.md (9 participants of mixed cameras at
    720p: 290-318 MB; the estimate with 720p cameras is higher, as it should be for the worst).
    The MP4 muxer's index (~25 MB per hour) is left out: the check is for the pictures.
    """
    sizes = [DEFAULT_CAMERA] * participants if isinstance(participants, int) else list(participants)
    settings = options.encode
    total = BASE_BYTES + len(sizes) * PARTICIPANT_BYTES
    if settings.video:
        w, h = settings.width, settings.height
        total += (VIDEO_QUEUE + 1) * _frame_bytes(w, h)
        total += _x264_bytes(w, h, settings.preset, settings.threads)
        total += sum(PICTURES_PER_PARTICIPANT * _frame_bytes(cw, ch) for cw, ch in sizes)
        if options.per_participant is not None:
            sw, sh = min(w, SIDECAR_SIZE[0]), min(h, SIDECAR_SIZE[1])
            each = _x264_bytes(sw, sh, settings.preset, 1) + (VIDEO_QUEUE + 1) * _frame_bytes(
                sw, sh
            )
            total += len(sizes) * each
    return total


def available_memory() -> int | None:
    """Bytes this process may still use: MemAvailable, or less if a cgroup (a container's
    memory limit) leaves less; None where neither can be read."""
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            found.append(max(0, int(limit) - usage))
        break
    return min(found) if found else None


def _resident_bytes() -> int:
    """This process's resident memory now (0 where /proc does not say)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def check_memory(
    options: MixOptions,
    participants: int | Sequence[tuple[int, int]],
    *,
    limit: int | None = None,
) -> int:
    """The job's memory estimate, or JobTooLargeError if it exceeds ``limit`` bytes (default:
    available_memory(); no check where that is unknown). Call before any work."""
    need = estimate_memory(options, participants)
    # what is available excludes what this process already holds, which the estimate counts
    have = None if limit is None else limit
    if have is None and (available := available_memory()) is not None:
        have = available + min(_resident_bytes(), BASE_BYTES)
    if have is None:
        _log.debug("memory available unknown: a job of about %d MB not checked", need // _MB)
        return need
    if need > have:
        s = options.encode
        count = participants if isinstance(participants, int) else len(participants)
        raise JobTooLargeError(
            f"the job needs about {need / _MB:,.0f} MB ({s.width}x{s.height} with x264 "
            f"{s.preset}, {count} participants), more than the {have / _MB:,.0f} MB available; "
            "a smaller size, a faster preset or fewer threads need less"
        )
    return need
