"""The README's headline table is what the committed runs say (benchmarks/readme_table.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "benchmarks" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_is_the_committed_runs():
    script = _script()
    table = script.table()
    assert table.split("\n")[0] == script.HEADER and "| unedited |" in table
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert table in readme, "README.md's table differs from the runs: python benchmarks/readme_table.py --readme"


def test_write_readme_replaces_only_the_table(tmp_path):
    script = _script()
    page = tmp_path / "README.md"
    page.write_text(f"# Title\n\ntext before\n\n{script.HEADER}\n|---|\n| old | row |\n\ntext after\n", encoding="utf-8")
    script.write_readme(f"{script.HEADER}\n|---|\n| new | row |", page)
    assert page.read_text(encoding="utf-8") == (
        f"# Title\n\ntext before\n\n{script.HEADER}\n|---|\n| new | row |\n\ntext after\n")
