"""JSON documents: reading a description file safely and validating it with pydantic, errors
with the JSON path.

Description files (SDP, manifest, layout, options) are read by read_description_text() and
read_json_file(): a regular file of at most MAX_DESCRIPTION_BYTES of UTF-8, refused with a
DescriptionError naming the file (never quoting what is in it) otherwise.

JSON documents (the manifest, layout files, skymix.options documents) are pydantic models
(JsonDocument) whose fields check themselves with the small checkers below, so that every message
says what is expected and what was found ("expected an even integer >= 0, got 3") and the JSON
Schema is generated from the same declarations (json_schema_input_type). validation_problems()
turns pydantic's errors into (JSON path, message) pairs for DescriptionError and OptionsError.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .errors import DescriptionError, OptionsError, SkymixError

__all__ = [
    "parse_document",
    "MAX_DESCRIPTION_BYTES",
    "JsonDocument",
    "is_int",
    "json_enum",
    "json_fraction",
    "json_int",
    "one_of",
    "problem",
    "ranged_int",
    "read_description_text",
    "read_json_file",
    "shown",
    "validation_problems",
]

#: Larger description files (SDP, manifest, layout, options) are refused unread: a few kB each.
MAX_DESCRIPTION_BYTES = 4 * 1024 * 1024


# --- reading description files ------------------------------------------------------------------


def read_description_text(path: str | os.PathLike[str], what: str) -> tuple[str, str]:
    """(file name, text) of a description file: a regular file of at most
    MAX_DESCRIPTION_BYTES of UTF-8. DescriptionError naming the file otherwise; the message never
    quotes the file's contents (a misdirected path must not disclose what it points at)."""
    name = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; a regular file ignores it
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DescriptionError(f"cannot read {what}: not a regular file", file=name)
            data = f.read(MAX_DESCRIPTION_BYTES + 1)
    except OSError as exc:
        raise DescriptionError(f"cannot read {what}: {exc.strerror or exc}", file=name) from None
    if len(data) > MAX_DESCRIPTION_BYTES:
        raise DescriptionError(
            f"cannot read {what}: larger than {MAX_DESCRIPTION_BYTES // 1024 // 1024} MiB",
            file=name,
        )
    try:
        return name, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
    # raised out of the handler, so that the decoding error (which holds the bytes) is not kept
    # as its context
    line = data.count(b"\n", 0, bad) + 1
    raise DescriptionError(f"cannot read {what}: not UTF-8 text", file=name, line=line)


def read_json_file(path: str | os.PathLike[str], what: str) -> tuple[str, object]:
    """(file name, parsed JSON) of a description file; DescriptionError naming the file (and
    the line, for bad JSON) when it cannot be read."""
    name, text = read_description_text(path, what)
    try:
        return name, json.loads(text)
    except json.JSONDecodeError as exc:
        problem, line = f"not JSON: {exc.msg} (column {exc.colno})", exc.lineno
    except RecursionError:
        problem, line = "not JSON skymix reads: nested too deeply", None
    raise DescriptionError(problem, file=name, line=line)  # out of the handler, as above


# --- validating documents ----------------------------------------------------------------------


def parse_document(text: str | bytes) -> object:
    """A JSON document a caller (a client of the service, an options file) sent, parsed;
    OptionsError saying why it is not JSON, never quoting its bytes."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"not JSON: {exc.msg} (line {exc.lineno})"
    except UnicodeDecodeError:
        reason = "not JSON: not UTF-8 text"
    except RecursionError:
        reason = "not JSON skymix reads: nested too deeply"
    raise OptionsError(reason)  # out of the handler: the context would hold the text


def problem(message: str, at: str = "") -> PydanticCustomError:
    """A validation error with skymix's own message; ``at`` extends the JSON path below the
    field being checked ("[2]" for an array item)."""
    return PydanticCustomError("skymix", "{message}", {"message": message, "at": at})


def shown(value: object) -> str:
    """A value as JSON, shortened for a message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: object) -> bool:
    """Whether a JSON value is an integer (a bool is not, though Python says so)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _int_text(low: int | None, high: int | None, even: bool) -> str:
    text = "an even integer" if even else "an integer"
    if low is not None and high is not None:
        return f"{text} {low}..{high}"
    return f"{text} >= {low}" if low is not None else text


def ranged_int(
    low: int | None = None, high: int | None = None, *, even: bool = False
) -> PlainValidator:
    """The validator of an integer field (never a bool or a float) within low..high, even if
    asked: ``Annotated[int, ranged_int(0, 127)]``."""
    expected = _int_text(low, high, even)

    def check(value: object) -> int:
        if (
            not is_int(value)
            or (low is not None and value < low)  # type: ignore[operator]
            or (high is not None and value > high)  # type: ignore[operator]
            or (even and value % 2)  # type: ignore[operator]
        ):
            raise problem(f"expected {expected}, got {shown(value)}")
        return cast(int, value)

    schema = Annotated[int, Field(ge=low, le=high, multiple_of=2 if even else None)]
    return PlainValidator(check, json_schema_input_type=schema)


def json_int(low: int | None = None, high: int | None = None, *, even: bool = False) -> Any:
    """An integer field (never a bool or a float) within low..high, even if asked."""
    return Annotated[int, ranged_int(low, high, even=even)]


def json_fraction(low_open: bool, high: float) -> Any:
    """A number (int or float, never a bool) in [0, high], or (0, high] if low_open."""
    expected = f"a number in {'(' if low_open else '['}0, {high:g}]"

    def check(value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (0 < value if low_open else 0 <= value)
            or value > high
        ):
            raise problem(f"expected {expected}, got {shown(value)}")
        return float(value)

    schema = Annotated[
        float, Field(gt=0 if low_open else None, ge=None if low_open else 0, le=high)
    ]
    return Annotated[float, PlainValidator(check, json_schema_input_type=schema)]


def one_of(*values: str) -> PlainValidator:
    """The validator of a string field that takes one of the given values:
    ``Annotated[str, one_of("audio", "video")]``."""
    expected = "one of " + ", ".join(json.dumps(v) for v in values)

    def check(value: object) -> str:
        if not isinstance(value, str) or value not in values:
            raise problem(f"expected {expected}, got {shown(value)}")
        return value

    return PlainValidator(check, json_schema_input_type=Literal[values])


def json_enum(*values: str) -> Any:
    """A string field that takes one of the given values."""
    return Annotated[str, one_of(*values)]


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _json_key(key: str) -> str:
    """A property name as a step of a JSON path: ``.name``, or ``["a b"]`` when it is not one."""
    return f".{key}" if _NAME.fullmatch(key) else f"[{json.dumps(key)}]"


class JsonDocument(BaseModel):
    """A JSON object with known properties only: an unknown one is refused, naming what is
    allowed (a misspelt property would otherwise be a setting silently not taken)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _known_properties(cls, data: object) -> object:
        if isinstance(data, dict):
            names = [info.alias or name for name, info in cls.model_fields.items()]
            for key in data:
                if key not in names:
                    raise problem(
                        f"unknown property (expected one of {', '.join(names)})",
                        _json_key(str(key)),
                    )
        return data


_TYPE_WORDS = {
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "dataclass_type": "an object",
    "list_type": "an array",
    "tuple_type": "an array",
    "bool_type": "true or false",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "literal_error": "one of {expected}",
}


def validation_problems(
    exc: ValidationError, *, empty_array: str = "expected at least one item"
) -> list[tuple[str, str]]:
    """(JSON path, message) of each error of a pydantic validation, paths as
    ``regions[1].show[0]`` ("" for the document itself), messages in skymix's words.

    ``empty_array`` is the message for an empty array where items are required, formatted with
    the error's context (``{min_length}``).
    """
    out = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
        at = ""
        if kind == "skymix":
            message, at = str(ctx["message"]), str(ctx["at"])
        elif kind == "missing":
            message = f"missing required property {loc.pop()!r}"
        elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
            message = "unknown property"
        elif kind == "string_too_short":
            message = "expected a non-empty string"
        elif kind == "too_short" and value in ([], ()):
            message = empty_array.format(**ctx)
        elif kind in _TYPE_WORDS:
            message = f"expected {_TYPE_WORDS[kind].format(**ctx)}, got {shown(value)}"
        elif kind == "value_error" and isinstance(ctx.get("error"), SkymixError):
            cause = ctx["error"]
            message = str(cause)
            if isinstance(cause, OptionsError) and cause.field:
                message = message.removeprefix(f"{cause.field}: ")
                at = f".{cause.field}"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        path = "".join(f"[{part}]" if isinstance(part, int) else _json_key(part) for part in loc)
        out.append(((path + at).removeprefix("."), message))
    return out
