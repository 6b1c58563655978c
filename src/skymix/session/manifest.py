"""The JSON session manifest: participants, their streams, codecs and presence, validated.

The manifest is checked against its JSON Schema (draft 2020-12, docs/manifest.schema.json; the
same text is MANIFEST_SCHEMA here, a test keeps the two identical) by a small validator for the
keywords that schema uses, since skymix does not depend on ``jsonschema``. Errors name the file
and the JSON path, e.g. ``participants[2].streams[0].ssrcs[1]: expected an integer
0..4294967295``. What a schema cannot say (unique ids, an RTX apt that names a codec of the
stream, joins and leaves alternating) is checked after it, with the same kind of path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ..errors import DescriptionError
from .model import CodecSpec, ParticipantSpec, StreamSpec, resolve_rtcp_port

__all__ = [
    "MANIFEST_SCHEMA",
    "ManifestParticipant",
    "load_manifest",
    "parse_manifest",
    "parse_time",
    "validate",
]

MANIFEST_SCHEMA: dict[str, Any] = json.loads(r"""
{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "skymix session manifest",
  "description": "Who is in a capture and which RTP streams are theirs (session-description.md).",
  "type": "object",
  "required": ["participants"],
  "additionalProperties": false,
  "properties": {
    "$schema": {"type": "string"},
    "participants": {
      "description": "An entry whose id is an --sdp participant's adds to it; others are new.",
      "type": "array",
      "items": {"$ref": "#/$defs/participant"}
    }
  },
  "$defs": {
    "uint32": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "payloadType": {"type": "integer", "minimum": 0, "maximum": 127},
    "time": {
      "description": "ISO 8601 with a UTC offset (Z, +hh:mm) on the relay's clock, to the ns.",
      "type": "string",
      "format": "date-time"
    },
    "participant": {
      "type": "object",
      "required": ["id"],
      "additionalProperties": false,
      "properties": {
        "id": {"type": "string", "minLength": 1},
        "name": {"description": "Shown name; default: the id", "type": "string", "minLength": 1},
        "sdp": {
          "description": "An SDP file with this participant's streams, beside the manifest.",
          "type": "string",
          "minLength": 1
        },
        "joins": {"type": "array", "items": {"$ref": "#/$defs/time"}},
        "leaves": {"type": "array", "items": {"$ref": "#/$defs/time"}},
        "streams": {"type": "array", "items": {"$ref": "#/$defs/stream"}}
      }
    },
    "stream": {
      "type": "object",
      "required": ["kind", "codecs"],
      "anyOf": [{"required": ["ssrcs"]}, {"required": ["port"]}],
      "additionalProperties": false,
      "properties": {
        "kind": {"enum": ["audio", "video"]},
        "ssrcs": {
          "type": "array",
          "minItems": 1,
          "uniqueItems": true,
          "items": {"$ref": "#/$defs/uint32"}
        },
        "port": {"$ref": "#/$defs/port"},
        "host": {"type": "string", "minLength": 1},
        "rtcp_port": {"$ref": "#/$defs/port"},
        "rtcp_mux": {"type": "boolean"},
        "mid": {"type": "string"},
        "codecs": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/codec"}},
        "rtx": {"type": "array", "items": {"$ref": "#/$defs/rtx"}},
        "rtx_ssrcs": {"type": "array", "items": {"$ref": "#/$defs/rtxSsrc"}},
        "extmap": {"type": "array", "items": {"$ref": "#/$defs/extmap"}}
      }
    },
    "codec": {
      "type": "object",
      "required": ["payload_type", "name", "clock_rate"],
      "additionalProperties": false,
      "properties": {
        "payload_type": {"$ref": "#/$defs/payloadType"},
        "name": {
          "description": "Encoding name as in a=rtpmap, any case: VP8, VP9, H264, opus, PCMU.",
          "type": "string",
          "minLength": 1
        },
        "clock_rate": {"type": "integer", "minimum": 1, "maximum": 4294967295},
        "channels": {"type": "integer", "minimum": 1, "maximum": 255},
        "fmtp": {"type": "object", "additionalProperties": {"type": "string"}}
      }
    },
    "rtx": {
      "description": "An RFC 4588 retransmission payload type and the payload type it repairs.",
      "type": "object",
      "required": ["payload_type", "apt"],
      "additionalProperties": false,
      "properties": {
        "payload_type": {"$ref": "#/$defs/payloadType"},
        "apt": {"$ref": "#/$defs/payloadType"}
      }
    },
    "rtxSsrc": {
      "description": "An RTX SSRC and the media SSRC it repairs (a=ssrc-group:FID).",
      "type": "object",
      "required": ["ssrc", "media_ssrc"],
      "additionalProperties": false,
      "properties": {
        "ssrc": {"$ref": "#/$defs/uint32"},
        "media_ssrc": {"$ref": "#/$defs/uint32"}
      }
    },
    "extmap": {
      "description": "An RFC 8285 header extension id and its URI.",
      "type": "object",
      "required": ["id", "uri"],
      "additionalProperties": false,
      "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 255},
        "uri": {"type": "string", "minLength": 1}
      }
    }
  }
}
""")

_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"([Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JSON_TYPES: dict[str, type] = {"string": str, "array": list, "object": dict}
_TYPE_NAMES = {"string": "a string", "array": "an array", "object": "an object"}
_TIME_HINT = "expected an ISO 8601 date-time with a UTC offset, e.g. 2024-05-01T10:00:00.250Z"


@dataclass(frozen=True, slots=True)
class ManifestParticipant:
    """One manifest entry as written: None (or no streams) where the manifest is silent, so
    load_description can tell "adds to an --sdp participant" from "replaces".

    sdp: the referenced SDP file, resolved against the manifest's folder. joins/leaves: ns since
    the Unix epoch. path: "participants[i]", for messages about the entry as a whole.
    """

    id: str
    name: str | None
    sdp: str | None
    streams: tuple[StreamSpec, ...]
    joins: tuple[int, ...] | None
    leaves: tuple[int, ...] | None
    path: str


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


def read_json_file(path: str | os.PathLike[str], what: str) -> tuple[str, object]:
    """(file name, parsed JSON) of a description file; DescriptionError naming the file (and
    the line, for bad JSON) when it cannot be read."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            return name, json.load(f)
    except json.JSONDecodeError as exc:
        raise DescriptionError(
            f"not JSON: {exc.msg} (column {exc.colno})", file=name, line=exc.lineno
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DescriptionError(f"cannot read {what}: {exc}", file=name) from exc


def load_manifest(path: str | os.PathLike[str]) -> tuple[ManifestParticipant, ...]:
    """Read, validate and convert the manifest at ``path``; SDP references resolve beside it."""
    name, data = read_json_file(path, "manifest")
    return parse_manifest(data, file=name, base_dir=os.path.dirname(name))


def parse_manifest(
    data: object, *, file: str = "<manifest>", base_dir: str = ""
) -> tuple[ManifestParticipant, ...]:
    """Validate already-decoded JSON and convert it; ``file`` only names it in errors."""
    validate(data, MANIFEST_SCHEMA, file=file)
    assert isinstance(data, dict)
    entries: list[ManifestParticipant] = []
    seen: dict[str, str] = {}
    for i, p in enumerate(data["participants"]):
        where = f"participants[{i}]"
        if p["id"] in seen:
            raise DescriptionError(
                f"id {p['id']!r} is already used by {seen[p['id']]}", file=file, path=f"{where}.id"
            )
        seen[p["id"]] = where
        joins = _times(p, "joins")
        leaves = _times(p, "leaves")
        try:
            ParticipantSpec(p["id"], p["id"], (), joins or (), leaves or ())
        except DescriptionError as exc:
            raise DescriptionError(str(exc), file=file, path=where) from exc
        streams = tuple(
            _stream(s, f"{where}.streams[{k}]", file) for k, s in enumerate(p.get("streams", []))
        )
        sdp = os.path.join(base_dir, p["sdp"]) if "sdp" in p else None
        entries.append(
            ManifestParticipant(p["id"], p.get("name"), sdp, streams, joins, leaves, where)
        )
    return tuple(entries)


def _times(p: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    if key not in p:
        return None
    return tuple(parse_time(t) for t in p[key])  # format-checked by validate()


def _stream(s: Mapping[str, Any], where: str, file: str) -> StreamSpec:
    codecs: dict[int, CodecSpec] = {}
    for m, c in enumerate(s["codecs"]):
        pt = c["payload_type"]
        if pt in codecs:
            raise DescriptionError(
                f"payload type {pt} is declared twice",
                file=file,
                path=f"{where}.codecs[{m}].payload_type",
            )
        codecs[pt] = CodecSpec(
            pt, c["name"], c["clock_rate"], c.get("channels", 1), c.get("fmtp", {})
        )
    rtx: dict[int, int] = {}
    for m, r in enumerate(s.get("rtx", [])):
        if r["payload_type"] in codecs or r["payload_type"] in rtx:
            raise DescriptionError(
                f"payload type {r['payload_type']} is declared twice",
                file=file,
                path=f"{where}.rtx[{m}].payload_type",
            )
        if r["apt"] not in codecs:
            raise DescriptionError(
                f"{r['apt']} is not a payload type of this stream's codecs",
                file=file,
                path=f"{where}.rtx[{m}].apt",
            )
        rtx[r["payload_type"]] = r["apt"]
    ssrcs = tuple(s.get("ssrcs", ()))
    rtx_ssrcs: dict[int, int] = {}
    for m, r in enumerate(s.get("rtx_ssrcs", [])):
        if r["ssrc"] in ssrcs or r["ssrc"] in rtx_ssrcs:
            raise DescriptionError(
                f"ssrc {r['ssrc']} is declared twice",
                file=file,
                path=f"{where}.rtx_ssrcs[{m}].ssrc",
            )
        if r["media_ssrc"] not in ssrcs:
            raise DescriptionError(
                f"{r['media_ssrc']} is not one of this stream's ssrcs",
                file=file,
                path=f"{where}.rtx_ssrcs[{m}].media_ssrc",
            )
        rtx_ssrcs[r["ssrc"]] = r["media_ssrc"]
    extmap: dict[int, str] = {}
    for m, e in enumerate(s.get("extmap", [])):
        if e["id"] == 15:
            raise DescriptionError(
                "id 15 is reserved (RFC 8285)", file=file, path=f"{where}.extmap[{m}].id"
            )
        if e["id"] in extmap:
            raise DescriptionError(
                f"id {e['id']} is declared twice", file=file, path=f"{where}.extmap[{m}].id"
            )
        extmap[e["id"]] = e["uri"]
    port = s.get("port")
    rtcp_mux = s.get("rtcp_mux", False)
    return StreamSpec(
        kind=s["kind"],
        port=port,
        rtcp_port=resolve_rtcp_port(port, rtcp_mux, s.get("rtcp_port")),
        rtcp_mux=rtcp_mux,
        ssrcs=ssrcs,
        codecs=codecs,
        rtx=rtx,
        rtx_ssrcs=rtx_ssrcs,
        extmap=extmap,
        mid=s.get("mid"),
        host=s.get("host"),
    )


def validate(
    instance: object,
    schema: Mapping[str, Any],
    *,
    file: str | None = None,
    root: Mapping[str, Any] | None = None,
    path: str = "",
) -> None:
    """Check ``instance`` against ``schema``; raise DescriptionError at the first violation.

    Supports the subset of JSON Schema 2020-12 that MANIFEST_SCHEMA uses: $ref (to #/$defs),
    type, enum, minLength, minimum, maximum, format "date-time", required, properties,
    additionalProperties, anyOf, items, minItems, uniqueItems. Annotations are ignored.
    """
    root = schema if root is None else root

    def fail(message: str, at: str = path) -> DescriptionError:
        return DescriptionError(message, file=file, path=at or "(top level)")

    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        validate(instance, target, file=file, root=root, path=path)
    kind = schema.get("type")
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if (
            not isinstance(instance, int)
            or isinstance(instance, bool)
            or (lo is not None and instance < lo)
            or (hi is not None and instance > hi)
        ):
            bounds = (
                f" {lo}..{hi}"
                if lo is not None and hi is not None
                else (f" >= {lo}" if lo is not None else "")
            )
            raise fail(f"expected an integer{bounds}, got {json.dumps(instance)}")
    elif kind == "boolean" and not isinstance(instance, bool):
        raise fail(f"expected true or false, got {json.dumps(instance)}")
    elif kind in _JSON_TYPES and not isinstance(instance, _JSON_TYPES[kind]):
        raise fail(f"expected {_TYPE_NAMES[kind]}, got {json.dumps(instance)}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            raise fail("expected a non-empty string")
        if schema.get("format") == "date-time":
            try:
                parse_time(instance)
            except ValueError as exc:
                raise fail(f"{exc}, got {instance!r}") from exc
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            raise fail(f"expected at least {schema['minItems']} item(s)")
        for i, item in enumerate(instance):
            if schema.get("uniqueItems") and item in instance[:i]:
                raise fail(f"repeats {path}[{instance.index(item)}]", f"{path}[{i}]")
            if "items" in schema:
                validate(item, schema["items"], file=file, root=root, path=f"{path}[{i}]")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                raise fail(f"missing required property {key!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            at = f"{path}.{key}" if _NAME.fullmatch(key) else f"{path}[{json.dumps(key)}]"
            at = at.removeprefix(".")
            if key in properties:
                validate(value, properties[key], file=file, root=root, path=at)
            elif extra is False:
                raise fail("unknown property", at)
            elif isinstance(extra, dict):
                validate(value, extra, file=file, root=root, path=at)
    if "enum" in schema and instance not in schema["enum"]:
        raise fail(
            f"expected one of {', '.join(json.dumps(v) for v in schema['enum'])}, "
            f"got {json.dumps(instance)}"
        )
    if "anyOf" in schema:
        errors = []
        for branch in schema["anyOf"]:
            try:
                validate(instance, branch, file=file, root=root, path=path)
                break
            except DescriptionError as exc:
                errors.append(exc)
        else:
            if all(set(b) == {"required"} for b in schema["anyOf"]):
                names = " or ".join(repr(k) for b in schema["anyOf"] for k in b["required"])
                raise fail(f"needs {names}")
            raise errors[0]
