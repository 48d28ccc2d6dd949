"""The ``workbench`` command line: the library's calls, JSON or a table out.

Each subcommand lives in its own module with ``register(subparsers)``; add a
module to :data:`COMMANDS` to add a command (the options they share are in
:mod:`~workbench.cli.arguments`, with :data:`~workbench.cli.arguments.LIMITS`, the
range of every numeric option: a new one needs an entry there). Bad input prints one
sentence to stderr and exits with status 2 (no traceback).

What it may import: any library layer (each subcommand imports what it calls
when it runs, so that ``workbench --help`` starts quickly) — never ``workbench.ui``,
which ``workbench app`` serves as a notebook instead of importing.
"""

from __future__ import annotations

import argparse
import os
import sys

from workbench.cli import app, edit, evaluate, info, knockout, lens, memories, methods, neurons, probe, trace
from workbench.cli.arguments import check_limits
from workbench.errors import WorkbenchError

#: Modules in this package that add a subcommand, in help order.
COMMANDS = (probe, evaluate, app, memories, neurons, lens, edit, methods, trace, knockout, info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench", description="Locate and edit factual knowledge in language models."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Progress bars go to stderr, but a JSON consumer wants a quiet run.
    if getattr(args, "json", False):
        os.environ.setdefault("WORKBENCH_PROGRESS", "0")
    try:
        check_limits(args)  # every numeric option in its declared range, before anything loads
        return int(args.handler(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"workbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
