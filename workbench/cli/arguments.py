"""What the subcommands share: the ``--model`` option and one-JSON-object output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    from workbench.loading import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")


def json_text(obj, **kwargs) -> str:
    """``obj`` as strict JSON; NaN or infinity (which JSON has no words for) is an error.

    Raises:
        WorkbenchError: the result holds a non-finite number (corrupt weights, or an
            edit that broke the model), so a JSON reader would choke on it.
    """
    from workbench.errors import WorkbenchError

    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        raise WorkbenchError(
            "the result holds NaN or infinity, which is not valid JSON: the model's outputs are not finite "
            "(corrupt weights, or an edit that broke it)"
        ) from None


def emit_json(obj) -> None:
    """Print exactly one JSON object on stdout (strict JSON: see :func:`json_text`)."""
    sys.stdout.write(json_text(obj) + "\n")


def check_output_path(path: str | None, what: str) -> None:
    """Refuse, before a long run starts, an output file whose folder does not exist."""
    from workbench.errors import WorkbenchError

    if path and path != "-":
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise WorkbenchError(f"{what} {path!r}: the folder {str(folder)!r} does not exist (nothing was run)")


def parse_workers(text: str) -> int | str:
    """``--workers``: a positive integer or ``auto``, checked (Ray installed) before the model loads."""
    from workbench.cluster import check_workers
    from workbench.errors import WorkbenchError

    text = str(text).strip().lower()
    if text == "auto":
        return check_workers("auto")
    if not text.isdigit() or int(text) < 1:
        raise WorkbenchError(f"--workers must be a positive integer or 'auto', got {text!r}")
    return check_workers(int(text))
