"""``workbench methods``: the editing methods this install has, read from their records."""

from __future__ import annotations

import argparse

from workbench.cli.arguments import emit_json


def register(sub) -> None:
    p = sub.add_parser("methods", help="the editing methods: name, what they change, summary")
    p.add_argument("--json", action="store_true", help="one JSON list on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workbench.editing import method_names, method_spec

    rows = []
    for name in method_names():
        spec = method_spec(name)
        rows.append({"name": name, "kind": spec.kind, "edits_layers": spec.edits_layers,
                     "key_statistics": spec.key_statistics, "summary": spec.summary,
                     "settings": {k: v for k, v in spec.settings().items()
                                  if isinstance(v, (bool, int, float, str)) or v is None}})
    if args.json:
        emit_json(rows)
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['kind']:<7}  {r['summary']}")
    return 0
