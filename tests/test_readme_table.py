"""The README's headline table is what the committed runs say (benchmarks/readme_table.py)."""

from __future__ import annotations

import importlib.util
import json
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


def test_the_many_edits_cell_reads_the_last_point_against_the_unedited_one(tmp_path, monkeypatch):
    script = _script()
    point = {"efficacy_score": 0.2, "paraphrase_score": 0.25, "neighborhood_score": 0.8, "perplexity": 20.0}
    curve = [dict(point, n_edits=0), dict(point, n_edits=100, efficacy_score=0.9, perplexity=50.0)]
    (tmp_path / "memit_b100.json").write_text(json.dumps({"curve": curve}), encoding="utf-8")
    monkeypatch.setattr(script, "CURVES", tmp_path)
    assert script._sequential_cell("memit") == "90 / 25 / 80, ×2.5 (100; batches of 100)"
    assert script._sequential_cell(None) == "20 / 25 / 80, ×1.0 (0)"
    assert script._sequential_cell("rome") == "–"  # no run committed


def test_the_diagnostics_table_is_each_batchs_recorded_values():
    spec = importlib.util.spec_from_file_location("edit_diagnostics", ROOT / "benchmarks" / "edit_diagnostics.py")
    edit_diagnostics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(edit_diagnostics)
    run = "alphaedit-paper_b100"
    curve = json.loads((edit_diagnostics.CURVES / f"{run}.json").read_text())["curve"]
    recorded = [p for p in curve if p.get("edit_diagnostics")]
    rows = [line for line in edit_diagnostics.table([run], "update_norm_ratio").splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(recorded) >= 10
    first = recorded[0]["edit_diagnostics"]["diagnostics"]
    layers = sorted(first, key=int)
    cells = rows[0].strip("|").split("|")
    assert int(cells[0]) == recorded[0]["n_edits"]
    assert [float(c) for c in cells[1:]] == [round(first[l]["update_norm_ratio"], 3) for l in layers]
