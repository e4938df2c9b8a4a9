"""The psql examples of the README ("Watching in PostgreSQL") run against the migrated schema.

They are read from the README itself, so the documentation cannot drift from the views.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chouette import queries
from shared import db
from tests.integration.chouette import seed

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_examples() -> list[str]:
    section = README.read_text().split("## Watching in PostgreSQL", 1)[1]
    block = re.search(r"```sql\n(.*?)```", section, re.S)
    assert block, "README: no sql block under 'Watching in PostgreSQL'"
    code = "\n".join(
        line for line in block.group(1).splitlines() if not line.lstrip().startswith("--")
    )
    statements = [s.strip() for s in code.split(";") if s.strip()]
    return [s.replace("'…'", "$1") for s in statements if not s.startswith("LISTEN")]


EXAMPLES = readme_examples()


def test_the_readme_has_the_examples() -> None:
    assert len(EXAMPLES) >= 8
    for view in ("request_progress", "request_timeline", "leaderboard", "model_registry"):
        assert any(view in sql for sql in EXAMPLES), view


@pytest.mark.parametrize("sql", EXAMPLES)
async def test_example_runs_and_returns_rows(sql: str, pool: db.Pool) -> None:
    request_id, _, _ = await seed.finished_model(pool, 0.7)
    args = (request_id,) if "$1" in sql else ()
    rows = await pool.fetch(sql, *args)
    if "champion_" not in sql:  # seeded rows promote no champion
        assert rows


def test_the_readme_listens_on_the_channels_the_cli_follows() -> None:
    section = README.read_text().split("## Watching in PostgreSQL", 1)[1]
    assert set(re.findall(r"LISTEN (\w+);", section)) == set(queries.CHANNELS)
