"""What the subcommands share: the ``--model`` option and one-JSON-object output."""

from __future__ import annotations

import argparse
import json
import sys


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    from workbench.loading import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")


def emit_json(obj) -> None:
    """Print exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
