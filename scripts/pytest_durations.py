"""A pytest plugin that appends every test phase's seconds to a file as the suite runs.

``--durations`` prints only at the end of a run and not per phase under xdist; this streams
``seconds<TAB>phase<TAB>outcome<TAB>node id`` lines (the controller and the workers both log a
report, so sort -u the file), which is how docs/performance.md split the suite's time.

Run: PYTHONPATH=scripts WORKBENCH_DURATIONS=/tmp/durations.tsv .venv/bin/python -m pytest tests -p pytest_durations
"""

from __future__ import annotations

import os


def pytest_runtest_logreport(report) -> None:
    path = os.environ.get("WORKBENCH_DURATIONS", "durations.tsv")
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{report.duration:.2f}\t{report.when}\t{report.outcome}\t{report.nodeid}\n")
