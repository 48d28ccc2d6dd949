"""Where the subject is: a traced fact's prompt and subject, and the tokens it covers."""

from __future__ import annotations

from collections.abc import Sequence

from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model


def prompt_and_subject(fact, subject: str | None) -> tuple[str, str, str | None]:
    """(filled prompt, subject, true object or None) from any accepted fact form."""
    if isinstance(fact, Fact):
        return fact.text, fact.subject, fact.target_true
    if isinstance(fact, (tuple, list)) and len(fact) == 2 and all(isinstance(x, str) for x in fact):
        prompt, subject = fact
    elif isinstance(fact, str):
        prompt = fact
    else:
        raise WorkbenchError(
            f"trace a workbench.Fact, a (prompt, subject) pair, or a prompt with subject=...; got {type(fact).__name__}"
        )
    if not isinstance(subject, str) or not subject.strip():
        raise WorkbenchError("no subject given: pass subject=... (the words to corrupt)")
    if not prompt.strip():
        raise WorkbenchError("empty prompt")
    if "{}" in prompt:
        prompt = prompt.replace("{}", subject, 1)
    return prompt, subject, None


def subject_span(model: Model, ids: Sequence[int], prompt: str, subject: str) -> tuple[int, int]:
    """Token positions ``[start, end)`` covering the first occurrence of ``subject``.

    A token that also carries a leading space or neighbouring characters counts as
    part of the subject ("▁Eiffel" covers "Eiffel"). Uses the tokenizer's character
    offsets when it has them, else decodes token by token.

    Raises:
        WorkbenchError: the subject is not in the prompt (the message shows the tokens).

    Example:
        >>> ids = model.encode("The Eiffel Tower is in")
        >>> subject_span(model, ids, "The Eiffel Tower is in", "Eiffel Tower")
        (2, 4)
    """
    ids = list(ids)
    # Surrounding spaces are no part of the subject; the tokens that carry them
    # (Gemma's "▁Eiffel") are found from the characters they cover.
    subject = subject.strip()
    text_start = prompt.find(subject)
    if text_start < 0:
        raise WorkbenchError(
            f"subject {subject!r} is not in the prompt {prompt!r} (tokens: {model.str_tokens(ids)})"
        )
    text_end = text_start + len(subject)
    spans = _char_spans(model, ids, prompt)
    covering = [i for i, (a, b) in enumerate(spans) if b > a and a < text_end and b > text_start]
    if not covering:
        raise WorkbenchError(
            f"subject {subject!r} is in the prompt but no token covers it (tokens: {model.str_tokens(ids)})"
        )
    return covering[0], covering[-1] + 1


def _char_spans(model: Model, ids: list[int], prompt: str) -> list[tuple[int, int]]:
    tok = model.tokenizer
    try:
        enc = tok(prompt, add_special_tokens=True, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids:
            return [tuple(map(int, o)) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        pass  # slow tokenizers have no offsets
    special = set(getattr(tok, "all_special_ids", []) or [])
    spans, pos = [], 0
    for i in ids:
        piece = "" if i in special else tok.decode([i])
        found = prompt.find(piece, pos) if piece else -1
        if found < 0 or found > pos + 1:  # keep alignment when a piece does not round-trip
            spans.append((pos, pos + len(piece)) if piece else (pos, pos))
            pos += len(piece)
        else:
            spans.append((found, found + len(piece)))
            pos = found + len(piece)
    return spans
