"""docs/TABLES.md is generated from the table specs: it must match the generator's output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMAND = "python scripts/schema_reference.py > docs/TABLES.md"


def test_tables_reference_matches_the_schema():
    generated = subprocess.run([sys.executable, str(REPO / "scripts" / "schema_reference.py")], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    committed = (REPO / "docs" / "TABLES.md").read_text(encoding="utf-8")
    assert committed == generated, (
        f"docs/TABLES.md is out of date with the table specs (tokenmill/schema.py, label families); "
        f"regenerate it with `{COMMAND}`")
