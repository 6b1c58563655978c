"""The JSON session manifest: participants, their streams, codecs and presence, validated.

The manifest is validated by pydantic models (ManifestDocument and the entries it holds); its
JSON Schema (draft 2020-12, docs/manifest.schema.json) is generated from the same models by
``manifest_json_schema()``, so the published schema and the validator cannot disagree. Each field
checks itself with a small checker that says what it expected and what it found, and errors name
the file and the JSON path, e.g. ``participants[2].streams[0].ssrcs[1]: expected an integer
0..4294967295, got -1``. What a schema cannot say (unique ids, an RTX apt that names a codec of
the stream, joins and leaves alternating) is checked after it, with the same kind of path.

Files named inside a manifest (``sdp``) resolve against the manifest's folder and may not leave
it, after ``..`` and symbolic links are resolved, unless the caller allows it
(``allow_outside=True``): a manifest handed to a service must not read /etc/passwd. Messages
never quote a file that is not the description itself.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, TypeAlias, cast

from pydantic import ConfigDict, Field, PlainValidator, ValidationError, model_validator

from ..errors import DescriptionError
from ..jsondoc import (
    JsonDocument,
    one_of,
    problem,
    ranged_int,
    read_json_file,
    shown,
    validation_problems,
)
from .model import CodecSpec, MediaKind, ParticipantSpec, StreamSpec, resolve_rtcp_port

__all__ = [
    "CodecEntry",
    "ExtmapEntry",
    "ManifestDocument",
    "ManifestParticipant",
    "ParticipantEntry",
    "RtxEntry",
    "RtxSsrcEntry",
    "StreamEntry",
    "load_manifest",
    "manifest_json_schema",
    "parse_manifest",
    "parse_time",
    "resolve_inside",
]

_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"([Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_HINT = "expected an ISO 8601 date-time with a UTC offset, e.g. 2024-05-01T10:00:00.250Z"


def parse_time(text: str) -> int:
    """An ISO 8601 date-time with a UTC offset as integer ns since the Unix epoch (exact).

    A time without an offset is refused: on which clock it was written cannot be known.
    """
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(_TIME_HINT)
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    zone = m.group(8)
    offset = (
        timedelta(0)
        if zone in "Zz"
        else (
            (-1 if zone[0] == "-" else 1) * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        )
    )
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError as exc:
        raise ValueError(f"{_TIME_HINT} ({exc})") from exc
    delta = moment - _EPOCH
    fraction = (m.group(7) or "").ljust(9, "0")
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + int(fraction)


# --- files the manifest names ------------------------------------------------------------------


def resolve_inside(folder: str, name: str, *, allow_outside: bool = False) -> str:
    """The real path of ``name`` (relative to ``folder``, or absolute), refused with ValueError
    when it leaves ``folder`` once ``..`` and symbolic links are resolved (unless allowed).

    The file need not exist: the check is on names, so its answer says nothing of what is there.
    """
    base = os.path.realpath(folder or os.curdir)
    target = os.path.realpath(os.path.join(base, name))
    if not allow_outside and os.path.commonpath([base, target]) != base:
        raise ValueError(f"{json.dumps(name)} is outside the manifest's folder")
    return target


# --- the document -------------------------------------------------------------------------------


def _check_time(value: object) -> int:
    if not isinstance(value, str):
        raise problem(f"{_TIME_HINT}, got {shown(value)}")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise problem(f"{exc}, got {shown(value)}") from None


Uint32: TypeAlias = Annotated[int, ranged_int(0, 2**32 - 1)]
Port: TypeAlias = Annotated[int, ranged_int(1, 65535)]
PayloadType: TypeAlias = Annotated[int, ranged_int(0, 127)]
Time: TypeAlias = Annotated[
    int,
    PlainValidator(
        _check_time,
        json_schema_input_type=Annotated[
            str,
            Field(
                json_schema_extra={"format": "date-time"},
                description="ISO 8601 with a UTC offset (Z, +hh:mm) on the relay's clock, "
                "to the ns.",
            ),
        ],
    ),
]
NonEmpty: TypeAlias = Annotated[str, Field(min_length=1)]


class _Entry(JsonDocument):
    """A manifest object: known properties only, values of exactly the declared JSON type."""

    model_config = ConfigDict(strict=True)


class CodecEntry(_Entry):
    """One payload type of a stream, as a=rtpmap (+ a=fmtp) would give it."""

    payload_type: PayloadType
    name: NonEmpty = Field(
        description="Encoding name as in a=rtpmap, any case: VP8, VP9, H264, opus, PCMU."
    )
    clock_rate: Annotated[int, ranged_int(1, 2**32 - 1)]
    channels: Annotated[int, ranged_int(1, 255)] = 1
    fmtp: dict[str, str] = Field(default_factory=dict, description="a=fmtp parameters")


class RtxEntry(_Entry):
    """An RFC 4588 retransmission payload type and the payload type it repairs."""

    payload_type: PayloadType
    apt: PayloadType


class RtxSsrcEntry(_Entry):
    """An RTX SSRC and the media SSRC it repairs (a=ssrc-group:FID)."""

    ssrc: Uint32
    media_ssrc: Uint32


class ExtmapEntry(_Entry):
    """An RFC 8285 header extension id and its URI."""

    id: Annotated[int, ranged_int(1, 255)]
    uri: NonEmpty


class StreamEntry(_Entry):
    """One RTP stream of a participant, matched by its SSRCs or its port."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["ssrcs"]}, {"required": ["port"]}]}
    )

    kind: Annotated[str, one_of("audio", "video")]
    ssrcs: (
        Annotated[list[Uint32], Field(min_length=1, json_schema_extra={"uniqueItems": True})] | None
    ) = None
    port: Port | None = None
    host: NonEmpty | None = Field(None, description="Only packets of this address match the port.")
    rtcp_port: Port | None = None
    rtcp_mux: bool = False
    mid: str | None = None
    codecs: Annotated[list[CodecEntry], Field(min_length=1)]
    rtx: list[RtxEntry] = Field(default_factory=list)
    rtx_ssrcs: list[RtxSsrcEntry] = Field(default_factory=list)
    extmap: list[ExtmapEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _matchable(self) -> StreamEntry:
        if self.ssrcs is None and self.port is None:
            raise problem("needs 'ssrcs' or 'port'")
        return self


class ParticipantEntry(_Entry):
    """A participant: an id, a shown name, streams (its own or an SDP's) and presence times."""

    id: NonEmpty
    name: NonEmpty | None = Field(None, description="Shown name; default: the id.")
    sdp: NonEmpty | None = Field(
        None,
        description="An SDP file with this participant's streams, in the manifest's folder.",
    )
    joins: list[Time] | None = None
    leaves: list[Time] | None = None
    streams: list[StreamEntry] | None = None


class ManifestDocument(_Entry):
    """Who is in a capture and which RTP streams are theirs (docs/session-description.md)."""

    model_config = ConfigDict(title="skymix session manifest")

    schema_: str | None = Field(None, alias="$schema", description="The schema, for editors.")
    participants: list[ParticipantEntry] = Field(
        description="An entry whose id is an SDP participant's adds to it; others are new."
    )


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of manifests (docs/manifest.schema.json), generated from the models."""
    schema = ManifestDocument.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --- conversion ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestParticipant:
    """One manifest entry as written: None (or no streams) where the manifest is silent, so
    load_description can tell "adds to an SDP participant" from "replaces".

    sdp: the referenced SDP file, resolved against the manifest's folder (its real path).
    joins/leaves: ns since the Unix epoch. path: "participants[i]", for messages about the entry
    as a whole.
    """

    id: str
    name: str | None
    sdp: str | None
    streams: tuple[StreamSpec, ...]
    joins: tuple[int, ...] | None
    leaves: tuple[int, ...] | None
    path: str


def load_manifest(
    path: str | os.PathLike[str], *, allow_outside: bool = False
) -> tuple[ManifestParticipant, ...]:
    """Read, validate and convert the manifest at ``path``; SDP references resolve beside it
    and may not leave its folder unless ``allow_outside``."""
    name, data = read_json_file(path, "manifest")
    return parse_manifest(
        data, file=name, base_dir=os.path.dirname(name), allow_outside=allow_outside
    )


def parse_manifest(
    data: object, *, file: str = "<manifest>", base_dir: str = "", allow_outside: bool = False
) -> tuple[ManifestParticipant, ...]:
    """Validate already-decoded JSON and convert it; ``file`` only names it in errors. SDP
    references resolve against ``base_dir`` (the current folder if empty) and may not leave it
    unless ``allow_outside``."""
    try:
        document = ManifestDocument.model_validate(data)
    except ValidationError as exc:
        where, message = validation_problems(
            exc, empty_array="expected at least {min_length} item(s)"
        )[0]
        raise DescriptionError(message, file=file, path=where or "(top level)") from None
    entries: list[ManifestParticipant] = []
    seen: dict[str, str] = {}
    for i, p in enumerate(document.participants):
        where = f"participants[{i}]"
        if p.id in seen:
            raise DescriptionError(
                f"id {p.id!r} is already used by {seen[p.id]}", file=file, path=f"{where}.id"
            )
        seen[p.id] = where
        joins = None if p.joins is None else tuple(p.joins)
        leaves = None if p.leaves is None else tuple(p.leaves)
        try:
            ParticipantSpec(p.id, p.id, (), joins or (), leaves or ())
        except DescriptionError as exc:
            raise DescriptionError(str(exc), file=file, path=where) from None
        streams = tuple(
            _stream(s, f"{where}.streams[{k}]", file) for k, s in enumerate(p.streams or ())
        )
        sdp = None
        if p.sdp is not None:
            try:
                sdp = resolve_inside(base_dir, p.sdp, allow_outside=allow_outside)
            except ValueError as exc:
                raise DescriptionError(str(exc), file=file, path=f"{where}.sdp") from None
        entries.append(ManifestParticipant(p.id, p.name, sdp, streams, joins, leaves, where))
    return tuple(entries)


def _once(
    values: list[int], what: Callable[[int], str], where: Callable[[int], str], file: str
) -> None:
    """DescriptionError at the first value that repeats an earlier one."""
    for m, value in enumerate(values):
        if value in values[:m]:
            raise DescriptionError(what(value), file=file, path=where(m))


def _stream(s: StreamEntry, where: str, file: str) -> StreamSpec:
    ssrcs = tuple(s.ssrcs or ())
    for m, ssrc in enumerate(ssrcs):
        if ssrc in ssrcs[:m]:
            raise DescriptionError(
                f"repeats {where}.ssrcs[{ssrcs.index(ssrc)}]", file=file, path=f"{where}.ssrcs[{m}]"
            )
    _once(
        [c.payload_type for c in s.codecs],
        lambda pt: f"payload type {pt} is declared twice",
        lambda m: f"{where}.codecs[{m}].payload_type",
        file,
    )
    codecs = {
        c.payload_type: CodecSpec(c.payload_type, c.name, c.clock_rate, c.channels, c.fmtp)
        for c in s.codecs
    }
    _once(
        [*codecs, *(r.payload_type for r in s.rtx)],
        lambda pt: f"payload type {pt} is declared twice",
        lambda m: f"{where}.rtx[{m - len(codecs)}].payload_type",
        file,
    )
    for m, r in enumerate(s.rtx):
        if r.apt not in codecs:
            raise DescriptionError(
                f"{r.apt} is not a payload type of this stream's codecs",
                file=file,
                path=f"{where}.rtx[{m}].apt",
            )
    _once(
        [*ssrcs, *(pair.ssrc for pair in s.rtx_ssrcs)],
        lambda ssrc: f"ssrc {ssrc} is declared twice",
        lambda m: f"{where}.rtx_ssrcs[{m - len(ssrcs)}].ssrc",
        file,
    )
    for m, pair in enumerate(s.rtx_ssrcs):
        if pair.media_ssrc not in ssrcs:
            raise DescriptionError(
                f"{pair.media_ssrc} is not one of this stream's ssrcs",
                file=file,
                path=f"{where}.rtx_ssrcs[{m}].media_ssrc",
            )
    for m, e in enumerate(s.extmap):
        if e.id == 15:
            raise DescriptionError(
                "id 15 is reserved (RFC 8285)", file=file, path=f"{where}.extmap[{m}].id"
            )
    _once(
        [e.id for e in s.extmap],
        lambda ext_id: f"id {ext_id} is declared twice",
        lambda m: f"{where}.extmap[{m}].id",
        file,
    )
    return StreamSpec(
        kind=cast(MediaKind, s.kind),
        port=s.port,
        rtcp_port=resolve_rtcp_port(s.port, s.rtcp_mux, s.rtcp_port),
        rtcp_mux=s.rtcp_mux,
        ssrcs=ssrcs,
        codecs=codecs,
        rtx={r.payload_type: r.apt for r in s.rtx},
        rtx_ssrcs={pair.ssrc: pair.media_ssrc for pair in s.rtx_ssrcs},
        extmap={e.id: e.uri for e in s.extmap},
        mid=s.mid,
        host=s.host,
    )
