"""The ``workbench`` command line: the library's calls, JSON or a table out.

Each subcommand lives in its own module with ``register(subparsers)``; add a
module to :data:`COMMANDS` to add a command. Bad input prints one sentence to
stderr and exits with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from workbench.errors import WorkbenchError

#: Modules in this package that add a subcommand, in help order.
COMMANDS = ["probe", "evaluate", "app", "memories", "neurons", "lens", "edit", "trace"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench", description="Locate and edit factual knowledge in language models."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"workbench.cli.{name}").register(sub)
    return parser


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    from workbench.loading import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")


def emit_json(obj) -> None:
    """Print exactly one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Progress bars go to stderr, but a JSON consumer wants a quiet run.
    if getattr(args, "json", False):
        os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    try:
        return int(args.handler(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
