"""The JSON Schemas in docs/ are the ones the models generate (`python -m skymix.schemas docs`)."""

from pathlib import Path

import pytest

from skymix.schemas import SCHEMAS, generate

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_published_schema_is_the_generated_one(name):
    assert (DOCS / name).read_text(encoding="utf-8") == generate(name), (
        f"docs/{name} is stale: run `python -m skymix.schemas docs`"
    )
