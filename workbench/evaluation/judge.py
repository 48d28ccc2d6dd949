"""Judge a generated answer: does it say the new object, the true object, or neither?

Generated text is judged by normalised matching, the way critics of editing
score free answers (Yang et al. 2025): case folded, punctuation dropped, a
leading article dropped from the object, and an object's other names from
``assets/aliases.json`` accepted. Only the first sentence of an answer counts;
within it the object mentioned *first* is the verdict ("Paris, not Rome" says
Paris). The letter test asks a different question (was an object mentioned at
all, anywhere in a long continuation) and uses :func:`mentions`.

Example:
    >>> judge(" the city of Rome, Italy. It is", new="Rome", true="Paris")
    'new'
    >>> judge(" Paris, not Rome.", new="Rome", true="Paris")
    'true'
    >>> judge(" a large steel tower.", new="Rome", true="Paris")
    'neither'
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache

from workbench.errors import DatasetError
from workbench.facts import ASSETS

ALIASES_FILE = ASSETS / "aliases.json"
VERDICTS = ("new", "true", "neither")
LETTER_VERDICTS = ("new", "true", "both", "neither")

_ARTICLE = re.compile(r"^(the|a|an) ")
# A sentence ends at . ! ? followed by a space or the end -- not after a lone capital
# ("U.S.", "J. Smith") or a common abbreviation ("St.", "Mr.", "Dr.").
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])(?<!\bSt)(?<!\bMr)(?<!\bDr)(?<!\bMs)[.!?](?=\s|$)")


def normalise(text: str) -> str:
    """Case folded, accents and punctuation removed, spaces collapsed.

    Example:
        >>> normalise("  São Paulo, Brazil!")
        'sao paulo brazil'
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = re.sub(r"[^\w]+", " ", text)
    return " ".join(text.split())


def first_sentence(text: str) -> str:
    """``text``'s first non-empty line, up to its first sentence end.

    Example:
        >>> first_sentence(" St. Petersburg, Russia. It is big.\\nQ:")
        ' St. Petersburg, Russia.'
    """
    lines = [line for line in text.split("\n") if line.strip()]
    text = lines[0] if lines else ""
    m = _SENTENCE_END.search(text)
    return text[: m.end()] if m else text


@lru_cache(maxsize=1)
def _aliases() -> dict[str, tuple[str, ...]]:
    try:
        table = json.loads(ALIASES_FILE.read_text())["aliases"]
        return {normalise(k): tuple(normalise(a) for a in v) for k, v in table.items()}
    except (OSError, json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
        raise DatasetError(f"{ALIASES_FILE} is damaged ({type(exc).__name__}: {exc})") from None


def names(obj: str) -> tuple[str, ...]:
    """The normalised names ``obj`` may be given by: itself (without a leading article) and its aliases.

    Example:
        >>> names("the Netherlands")
        ('netherlands', 'holland')
    """
    own = normalise(obj)
    bare = _ARTICLE.sub("", own)
    found = [bare] + [_ARTICLE.sub("", a) for a in _aliases().get(own, _aliases().get(bare, ()))]
    return tuple(dict.fromkeys(n for n in found if n))


def _first_mention(text: str, obj: str) -> tuple[int, int] | None:
    """(start, -length) of the earliest mention of any of ``obj``'s names in normalised ``text``."""
    best = None
    padded = f" {text} "
    for name in names(obj):
        at = padded.find(f" {name} ")
        if at >= 0 and (best is None or (at, -len(name)) < best):
            best = (at, -len(name))
    return best


def mentions(text: str, obj: str) -> bool:
    """Whether ``text`` names ``obj`` (whole words, after normalising both).

    Example:
        >>> mentions("Greetings from Roma and Rome!", "Rome"), mentions("Romeo", "Rome")
        (True, False)
    """
    return _first_mention(normalise(text), obj) is not None


def judge(generation: str, *, new: str, true: str) -> str:
    """``"new"``, ``"true"`` or ``"neither"``: which object the answer's first sentence names first.

    When both names start at the same place (one object's name inside the
    other's, "York" in "New York"), the longer one is meant.
    """
    text = normalise(first_sentence(generation))
    at_new, at_true = _first_mention(text, new), _first_mention(text, true)
    if at_new is None and at_true is None:
        return "neither"
    if at_true is None or (at_new is not None and at_new < at_true):
        return "new"
    return "true"


def letter_verdict(text: str, *, new: str, true: str) -> str:
    """``"new"``, ``"true"``, ``"both"`` or ``"neither"``: which objects a whole continuation mentions."""
    has_new, has_true = mentions(text, new), mentions(text, true)
    return "both" if has_new and has_true else "new" if has_new else "true" if has_true else "neither"
