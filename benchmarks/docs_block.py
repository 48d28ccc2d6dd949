"""Write a generated table into docs/results.md between its ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` markers (the table scripts' ``--docs``).

Example::

    from docs_block import write_block     # from a script in benchmarks/
    write_block("letters", table())
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"


def write_block(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace the block ``name`` of ``path`` with ``text``; exits with a message when the markers are missing."""
    body = path.read_text(encoding="utf-8")
    new, n = re.subn(rf"(<!-- {re.escape(name)}:start -->\n).*?(<!-- {re.escape(name)}:end -->)",
                     lambda m: m.group(1) + text + "\n" + m.group(2), body, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path.name} has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    path.write_text(new, encoding="utf-8")
