"""The unedited model's generated texts (letters, answers), kept on disk for the next run to reuse.

A letter run samples the unedited model's letters for each fact ("before") and the edited
model's ("after"). Every method asks the same unedited model for the same letters with the
same seed, about ten seconds a fact on a CPU, half of the run; the first run keeps them here
and the others read them. The greedy answers of the critics' measures are kept alike (a
1,000-record sequential run spends a quarter of an hour on the unedited model's). The texts are
what is kept (the verdicts are judged again on reading, so a mended judge applies to them).

An entry is keyed by all that its texts depend on: the model's name, weight fingerprint and
dtype, the prompts in their order (a sampled text depends on its batch), the sampling
settings, torch's and transformers' versions, the CPU kernels and the bfloat16 switch, and
the source of the generation code. Only an unedited model's texts are kept
(:meth:`~workbench.core.model.Model.is_unedited`). ``WORKBENCH_TEXT_CACHE=0`` turns it off.

Example:
    >>> texts = cached_texts(model, ["Dear Anna, the Eiffel Tower"], max_new_tokens=60,
    ...                      do_sample=True, top_k=5, seed=0)       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from workbench.core.model import Model
from workbench.errors import WorkbenchError
from workbench.probing import generate_many
from workbench.runtime.cache import cache_dir, write_file_atomically

log = logging.getLogger(__name__)

#: Bump when the stored layout changes.
FORMAT = 1
#: Source files whose change can change a sampled text (the sampler, its unembedding, the prompt path).
_CODE = ("probing.py", "runtime/unembed.py", "runtime/screen.py", "core/model.py")


def enabled() -> bool:
    """Whether sampled texts are kept (``WORKBENCH_TEXT_CACHE`` unset or not ``0``)."""
    return os.environ.get("WORKBENCH_TEXT_CACHE", "1") != "0"


@functools.cache
def _code_digest() -> str:
    # Read once a process: every lookup and store needs it, and the source does not change under it.
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in _CODE:
        h.update(name.encode())
        h.update((root / name).read_bytes())
    return h.hexdigest()


def entry_key(model: Model, prompts: Sequence[str], settings: dict) -> str:
    """The hash naming the entry of these prompts sampled with ``settings`` on ``model``."""
    import transformers

    dtype = str(next(model.hf_model.parameters()).dtype)
    what = {
        "format": FORMAT, "model": model.name, "fingerprint": model.fingerprint, "dtype": dtype,
        "prompts": list(prompts), "settings": settings, "torch": torch.__version__,
        "transformers": transformers.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
        "bf16": os.environ.get("WORKBENCH_BF16", ""), "code": _code_digest(),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def _read(path: Path, prompts: list[str]) -> list[str] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable cached texts %s (%s); sampling them again", path, exc)
        return None
    texts = data.get("texts") if isinstance(data, dict) else None
    if (data.get("prompts") if isinstance(data, dict) else None) != prompts or not (
            isinstance(texts, list) and len(texts) == len(prompts) and all(isinstance(t, str) for t in texts)):
        log.warning("ignoring the cached texts %s: they are not these prompts'; sampling them again", path)
        return None
    return texts


def _write(path: Path, prompts: list[str], texts: list[str]) -> None:
    try:
        write_file_atomically(path, json.dumps({"prompts": prompts, "texts": texts}).encode())
    except (OSError, WorkbenchError) as exc:
        log.warning("could not keep the sampled texts in %s (%s)", path.parent, exc)


def _entry(model: Model, prompts: list[str], settings: dict) -> Path | None:
    """Where the entry of ``prompts`` generated with ``settings`` lies; None when nothing may be
    kept (switched off, an edited model, no prompts, a cache that cannot be used)."""
    if not prompts or not enabled() or not model.is_unedited():
        return None
    try:
        folder = cache_dir("texts", model.name.replace("/", "_"))
    except WorkbenchError as exc:
        # Only a saving: a cache that cannot be used must not stop a run.
        log.warning("%s; generating without it", exc)
        return None
    return folder / f"{entry_key(model, prompts, settings)}.json"


def _settings(max_new_tokens: int, do_sample: bool, top_k: int | None, seed: int, batch_size: int) -> dict:
    return {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "top_k": top_k,
            "seed": seed if do_sample else None, "batch_size": batch_size}


def lookup(model: Model, prompts: Sequence[str], *, max_new_tokens: int, do_sample: bool = False,
           top_k: int | None = None, seed: int = 0, batch_size: int = 16) -> list[str] | None:
    """The kept texts of these prompts and settings on the unedited ``model``, or None.

    Example:
        >>> lookup(model, prompts, max_new_tokens=60, do_sample=True, top_k=5)   # doctest: +SKIP
    """
    prompts = list(prompts)
    path = _entry(model, prompts, _settings(max_new_tokens, do_sample, top_k, seed, batch_size))
    return None if path is None else _read(path, prompts)


def store(model: Model, prompts: Sequence[str], texts: Sequence[str], *, max_new_tokens: int,
          do_sample: bool = False, top_k: int | None = None, seed: int = 0, batch_size: int = 16) -> None:
    """Keep ``texts``, generated for ``prompts`` with these settings on the unedited ``model``
    (nothing is kept for an edited one)."""
    prompts = list(prompts)
    path = _entry(model, prompts, _settings(max_new_tokens, do_sample, top_k, seed, batch_size))
    if path is not None:
        _write(path, prompts, list(texts))


def cached_texts(model: Model, prompts: Sequence[str], *, max_new_tokens: int, do_sample: bool = False,
                 top_k: int | None = None, seed: int = 0, batch_size: int = 16) -> list[str]:
    """:func:`~workbench.probing.generate_many`, read from the cache when the model is unedited and
    these prompts were generated so before (and kept for the next time).

    Example:
        >>> cached_texts(model, prompts, max_new_tokens=60, do_sample=True, top_k=5)   # doctest: +SKIP
    """
    prompts = list(prompts)
    settings = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, top_k=top_k, seed=seed, batch_size=batch_size)
    texts = lookup(model, prompts, **settings)
    if texts is None:
        texts = generate_many(model, prompts, **settings)
        store(model, prompts, texts, **settings)
    return texts
