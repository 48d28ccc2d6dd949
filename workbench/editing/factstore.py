"""A fact store keyed by entity: find stored facts whose subject a prompt mentions.

The retrieval memory (:mod:`workbench.editing.retrieval`) first asks this store which
stored facts' subjects a prompt names -- case- and accent-insensitively, on word
boundaries, also by the subject's other names from ``assets/aliases.json`` -- and only
falls back to sentence similarity when none is named. Mention does not care how the
prompt is worded (a question, a letter, lower case), which prompt-to-prompt
similarity does.

Several facts about one subject are ranked by how many of their relation's words (the
stored prompt without the subject and without stopwords) the prompt contains.

A lookup reads the prompt's words once and tries every span of up to
:data:`MAX_NAME_WORDS` words in a dictionary, so its cost does not grow with the number
of stored facts.

Example:
    >>> store = FactStore()
    >>> store.add(["Eiffel Tower"], ["The Eiffel Tower is located in the city of"])
    >>> [(m.index, m.name) for m in store.mentions("write a letter about the eiffel tower")]
    [(0, 'eiffel tower')]
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from workbench.facts import ASSETS

#: Longest name (in words) a lookup tries; longer subjects are matched by their first words.
MAX_NAME_WORDS = 8
#: Aliases this short (after normalising) must match with their exact letter case ("US" not "us").
SHORT_ALIAS = 3
ALIASES_FILE = ASSETS / "aliases.json"

_ARTICLES = ("the ", "a ", "an ")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
#: Words that say nothing about which relation a prompt asks for.
STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or is was are were be been being it its this that "
    "which who whom whose what where when why how do does did has have had as into than then there "
    "their his her he she they them you your i me my we our us s not no".split()
)


def normalize(text: str) -> str:
    """Case-folded, accents removed, every run of non-letters/digits one space: ``'Zürich!' -> 'zurich'``."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_WORD.findall(plain.casefold()))


def words(text: str) -> list[str]:
    return normalize(text).split()


def name_key(text: str) -> str:
    """A subject or alias as it is matched: normalised, a leading article dropped."""
    norm = normalize(text)
    for article in _ARTICLES:
        if norm.startswith(article) and len(norm) > len(article):
            return norm[len(article):]
    return norm


def _stem(word: str) -> str:
    # A crude stem: "located"/"location", "plays"/"playing" share their first five letters.
    return word[:5]


@functools.lru_cache(maxsize=1)
def alias_table() -> dict[str, tuple[str, ...]]:
    """``assets/aliases.json`` as normalised name -> other names (as written)."""
    try:
        raw = json.loads(ALIASES_FILE.read_text(encoding="utf-8")).get("aliases", {})
    except (OSError, ValueError):
        return {}
    table: dict[str, tuple[str, ...]] = {}
    for key, names in raw.items():
        table.setdefault(name_key(key), tuple(n for n in names if isinstance(n, str)))
    return table


def aliases(subject: str) -> tuple[str, ...]:
    """The other names of ``subject`` in ``assets/aliases.json`` (empty if none)."""
    return alias_table().get(name_key(subject), ())


def relation_words(prompt: str, subject: str | None) -> frozenset[str]:
    """Stems of the words of a stored prompt that name its relation (not its subject, no stopwords)."""
    subject_words = set(words(subject)) if subject else set()
    return frozenset(_stem(w) for w in words(prompt) if w not in STOPWORDS and w not in subject_words)


@dataclass(frozen=True)
class Mention:
    """A stored fact whose subject a prompt names.

    Attributes:
        index: the fact's position in the store.
        name: the name found (normalised: the subject or one of its aliases).
        alias: whether ``name`` is an alias rather than the subject itself.
        relation_score: share of the fact's relation words found in the prompt (0..1).
    """

    index: int
    name: str
    alias: bool
    relation_score: float


class FactStore:
    """Stored facts' subjects (and aliases) indexed for mention lookup.

    Attributes:
        subjects: per stored fact, its subject (None: the fact can only be found by similarity).
        relations: per stored fact, the stems of its relation's words.
    """

    def __init__(self, *, use_aliases: bool = True) -> None:
        self.use_aliases = use_aliases
        self.subjects: list[str | None] = []
        self.relations: list[frozenset[str]] = []
        self._names: dict[str, list[tuple[int, bool]]] = {}  # normalised name -> (fact, is alias)
        self._exact: dict[str, list[tuple[int, bool]]] = {}  # short aliases, matched case-sensitively
        self._longest = 1

    def __len__(self) -> int:
        return len(self.subjects)

    def add(self, subjects: Sequence[str | None], prompts: Sequence[str]) -> None:
        """Store facts: each one's subject (or None) and its prompt (which names its relation)."""
        for subject, prompt in zip(subjects, prompts, strict=True):
            index = len(self.subjects)
            self.subjects.append(subject)
            self.relations.append(relation_words(prompt, subject))
            if not subject:
                continue
            self._index(name_key(subject), index, alias=False)
            for other in aliases(subject) if self.use_aliases else ():
                name = name_key(other)
                if len(name.replace(" ", "")) <= SHORT_ALIAS:
                    exact = " ".join(_WORD.findall(other))
                    self._exact.setdefault(exact, []).append((index, True))
                    self._longest = max(self._longest, len(exact.split()))
                else:
                    self._index(name, index, alias=True)

    def _index(self, name: str, index: int, *, alias: bool) -> None:
        if not name:
            return
        n = len(name.split())
        if n > MAX_NAME_WORDS:
            name = " ".join(name.split()[:MAX_NAME_WORDS])
            n = MAX_NAME_WORDS
        self._names.setdefault(name, []).append((index, alias))
        self._longest = max(self._longest, n)

    def mentions(self, prompt: str) -> list[Mention]:
        """The stored facts whose subject ``prompt`` names, best relation match first.

        Names are found longest first and do not overlap ("Eiffel Tower" hides a subject
        "Tower" inside it). Ties keep the newest fact first.
        """
        if not self.subjects:
            return []
        tokens = words(prompt)
        raw = _WORD.findall(unicodedata.normalize("NFKD", prompt))
        raw = ["".join(c for c in w if not unicodedata.combining(c)) for w in raw]
        found: dict[int, tuple[str, bool]] = {}
        i = 0
        while i < len(tokens):
            step = 1
            for n in range(min(self._longest, len(tokens) - i), 0, -1):
                span = " ".join(tokens[i:i + n])
                hits = self._names.get(span)
                if hits is None and self._exact and len(raw) == len(tokens):
                    hits = self._exact.get(" ".join(raw[i:i + n]))
                if hits:
                    for index, alias in hits:
                        found.setdefault(index, (span, alias))
                    step = n
                    break
            i += step
        if not found:
            return []
        stems = {_stem(w) for w in tokens}
        out = []
        for index, (name, alias) in found.items():
            rel = self.relations[index]
            score = len(rel & stems) / len(rel) if rel else 0.0
            out.append(Mention(index, name, alias, score))
        out.sort(key=lambda m: (-m.relation_score, -m.index))
        return out
