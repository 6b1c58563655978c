"""What a capture means: participants, their streams and codecs, from SDP and/or a manifest.

``load_description`` combines the two routes (docs/session-description.md):

- ``sdp``: SDP files ("FILE" or "NAME=FILE"), one per participant in order. A participant from
  an SDP has the id and display name NAME, or "participant N" (1-based position).
- ``manifest``: a JSON manifest. An entry whose id is that of an SDP participant adds to it (its
  name, joins and leaves replace; its streams are added after the SDP's); any other entry is a
  new participant after the SDP ones, with streams from its own ``sdp`` reference and/or
  ``streams``. SDP files a manifest names must be in its folder unless ``allow_outside``.

With neither, the description is empty and every stream is guessed (session.detect).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import DescriptionError
from .detect import Guess, RtpSample, classify_datagram, guess_stream
from .manifest import (
    ManifestDocument,
    ManifestParticipant,
    load_manifest,
    manifest_json_schema,
    parse_manifest,
)
from .model import (
    CodecSpec,
    ParticipantSpec,
    SessionSpec,
    StreamMatch,
    StreamSpec,
)
from .sdp import parse_sdp, read_sdp

__all__ = [
    "CodecSpec",
    "Guess",
    "ManifestDocument",
    "ManifestParticipant",
    "ParticipantSpec",
    "RtpSample",
    "SdpSource",
    "SessionSpec",
    "StreamMatch",
    "StreamSpec",
    "classify_datagram",
    "guess_stream",
    "load_description",
    "load_manifest",
    "manifest_json_schema",
    "parse_manifest",
    "parse_sdp",
    "read_sdp",
]

SdpSource = str | os.PathLike[str] | tuple[str, str | os.PathLike[str]]
"""An SDP for one participant: a path, "NAME=PATH", or (NAME, PATH)."""


def load_description(
    sdp: Sequence[SdpSource] = (),
    manifest: str | os.PathLike[str] | None = None,
    *,
    allow_outside: bool = False,
) -> SessionSpec:
    """The session described by SDP files (one per participant, in order) and a manifest.

    SDP files the manifest names resolve against its folder and may not leave it (after ``..``
    and symbolic links) unless ``allow_outside``: a manifest from elsewhere cannot make skymix
    read any file it likes. The SDP files given here directly are the caller's own choice.
    """
    order: list[str] = []
    names: dict[str, str] = {}
    sources: dict[str, str] = {}
    streams: dict[str, tuple[StreamSpec, ...]] = {}
    joins: dict[str, tuple[int, ...]] = {}
    leaves: dict[str, tuple[int, ...]] = {}
    read: list[str] = []
    for position, source in enumerate(sdp, 1):
        name, path = _split_source(source, position)
        if name in names:
            raise DescriptionError(f"participant name {name!r} is given to two SDPs", file=path)
        order.append(name)
        names[name] = name
        sources[name] = path
        read.append(path)
        streams[name] = read_sdp(path)
    manifest_file = os.fspath(manifest) if manifest is not None else ""
    entries: tuple[ManifestParticipant, ...] = (
        load_manifest(manifest_file, allow_outside=allow_outside) if manifest_file else ()
    )
    for entry in entries:
        if entry.id in streams:
            if entry.sdp is not None:
                raise DescriptionError(
                    f"participant {entry.id!r} already has an SDP ({sources[entry.id]})",
                    file=manifest_file,
                    path=f"{entry.path}.sdp",
                )
            streams[entry.id] += entry.streams
        else:
            from_sdp = read_sdp(entry.sdp) if entry.sdp is not None else ()
            if not from_sdp and not entry.streams:
                raise DescriptionError(
                    f"participant {entry.id!r} has no streams: give 'streams' or 'sdp', or use "
                    f"the id of an SDP participant ({', '.join(map(repr, order)) or 'none'})",
                    file=manifest_file,
                    path=entry.path,
                )
            order.append(entry.id)
            sources[entry.id] = entry.sdp or f"{manifest_file} {entry.path}"
            streams[entry.id] = from_sdp + entry.streams
        names[entry.id] = entry.name or names.get(entry.id, entry.id)
        if entry.joins is not None:
            joins[entry.id] = entry.joins
        if entry.leaves is not None:
            leaves[entry.id] = entry.leaves
    files = [(f"SDP file {i}", path) for i, path in enumerate(read, 1)]
    files += [("the manifest", manifest_file)] if manifest_file else []
    files += [(f"the SDP file of {e.id!r}", e.sdp) for e in entries if e.sdp is not None]
    return SessionSpec(
        tuple(
            ParticipantSpec(
                pid,
                names[pid],
                streams[pid],
                joins.get(pid, ()),
                leaves.get(pid, ()),
                described_by=sources[pid],
            )
            for pid in order
        ),
        files=tuple(files),
    )


def _split_source(source: SdpSource, position: int) -> tuple[str, str]:
    """(participant name, path) of one SDP source.

    "NAME=FILE" is split at the first "=", unless the whole argument names an existing file.
    """
    if isinstance(source, tuple):
        name, path = source[0], os.fspath(source[1])
    else:
        text = os.fspath(source)
        name, sep, path = text.partition("=")
        if not sep or isinstance(source, os.PathLike) or os.path.exists(text):
            name, path = "", text
    if not path:
        raise DescriptionError(f"SDP {source!r}: no file given")
    return name or f"participant {position}", path
