"""``workbench info``: what this process runs with — versions, the thread policy as read back, the cache."""

from __future__ import annotations

import argparse

from workbench.cli.arguments import emit_json


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, the thread policy in effect, the cache folder")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    import torch

    from workbench.runtime.cache import cache_dir
    from workbench.core.loading import BUILTIN_MODELS, DEFAULT_MODEL
    from workbench.runtime.threads import policy

    out = {
        "workbench": md.version("workbench") if _installed("workbench") else "source",
        "torch": torch.__version__,
        "transformer_lens": md.version("transformer-lens"),
        "threads": policy(),
        "cache": str(cache_dir()),
        "default_model": DEFAULT_MODEL,
        "models": sorted(BUILTIN_MODELS),
    }
    if args.json:
        emit_json(out)
        return 0
    for key, value in out.items():
        print(f"{key:>16}: {value}")
    return 0


def _installed(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False
