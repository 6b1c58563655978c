"""The JSON Schemas skymix publishes, each generated from the pydantic model that validates the
document, so a schema and its validator cannot disagree.

``python -m skymix.schemas docs`` writes them into docs/; tests/test_schemas.py checks that the
files there are what the models generate now.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SCHEMAS", "generate", "write_all"]


def _manifest() -> dict[str, Any]:
    from .session.manifest import manifest_json_schema

    return manifest_json_schema()


def _layout() -> dict[str, Any]:
    from .layout import layout_json_schema

    return layout_json_schema()


def _options() -> dict[str, Any]:
    from .options import options_json_schema

    return options_json_schema()


def _report() -> dict[str, Any]:
    from .report import report_json_schema

    return report_json_schema()


def _settings() -> dict[str, Any]:
    from .deliver.settings import settings_json_schema

    return settings_json_schema()


#: file name in docs/ -> the function that generates it from its model
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "manifest.schema.json": _manifest,
    "layout.schema.json": _layout,
    "options.schema.json": _options,
    "report.schema.json": _report,
    "settings.schema.json": _settings,
}


def generate(name: str) -> str:
    """The text of one published schema, as it is written to docs/."""
    return json.dumps(SCHEMAS[name](), indent=2, ensure_ascii=False) + "\n"


def write_all(folder: str | Path) -> list[Path]:
    """Write every schema into `folder`; returns the paths written."""
    written = []
    for name in SCHEMAS:
        path = Path(folder) / name
        path.write_text(generate(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_all(sys.argv[1] if len(sys.argv) > 1 else "docs"):
        print(written_path)  # noqa: T201 - a developer's command
