"""Judge a generated answer: does it say the new object, the true object, or neither?

Generated text is judged by normalised matching, the way critics of editing
score free answers (Yang et al. 2025): case folded, punctuation dropped, a
leading article dropped from the object, and an object's other names from
``assets/aliases.json`` accepted. Only the first sentence of an answer counts;
within it the object mentioned *first* is the verdict ("Paris, not Rome" says
Paris). The letter test asks a different question (does a long continuation about
the subject say that an object is the subject's, anywhere) and uses
:func:`letter_verdict`: every mention counts, except those that are part of the
subject's own name or another thing's name ("the Toyota Prius"), denied ("not a
Nissan"), or, given the subject, in a sentence with no word or pronoun for it
(:func:`counted_mentions` has the rules). Checked against letters labelled by reading
(``assets/judge_labels/``: 100 of ROME's, 100 of the other methods', 30 "neither" letters
that name the new object, and the 66 letters the repetition rule acts on;
``tests/test_judge_labels.py``, ``benchmarks/judge_agreement.py``):
it finds nearly every claim but also counts mentions that are no claim, more often after a
weight edit than with the fact in context.

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


# -- the letter test --------------------------------------------------------------------------------
#: Words that, following a company's name, still name the company ("Toyota Motor Corporation").
COMPANY_WORDS = frozenset(
    "motor motors company corporation corp co inc incorporated ltd limited plc group ag gmbh sa spa "
    "industries automobiles automotive aircraft airplanes electronics computers computer "
    "technologies international".split())
# A name's next word, right after it on the same line: optionally a possessive, then spaces.
_NEXT_WORD = re.compile(r"(?:['’]s)?[ \t]+([^\s]+)")
_DENIED = re.compile(r"(?:\bnot|\bnever|n['’]t)[ \t]+(?:(?:a|an|the)[ \t]+)?$", re.IGNORECASE)
#: Words that may stand for the subject in a sentence of a letter about it.
PRONOUNS = frozenset("it its itself he his him himself she her herself they their them".split())
_SMALL_WORDS = frozenset("the a an of and in on at for to de la le du des von van".split())
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")


def _fold(text: str) -> tuple[str, list[int]]:
    """``text`` folded as :func:`normalise` folds it, one character at a time (punctuation made a
    space, spaces not collapsed), with each folded character's index in ``text``."""
    out, where = [], []
    for i, c in enumerate(text):
        plain = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x)).casefold()
        for x in plain or " ":
            out.append(x if x.isalnum() or x == "_" else " ")
            where.append(i)
    return "".join(out), where


def _spans(folded: str, where: list[int], name: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the original text where the normalised ``name`` stands, whole words."""
    words = name.split()
    if not words:
        return []
    pattern = r"(?<![^\W_])" + r"\s+".join(re.escape(w) for w in words) + r"(?![^\W_])"
    return [(where[m.start()], where[m.end() - 1] + 1) for m in re.finditer(pattern, folded)]


def counted_mentions(text: str, obj: str, *, subject: str | None = None) -> list[tuple[int, int]]:
    """The mentions of ``obj`` in ``text`` that the letter verdict counts, as character spans.

    A mention (any of :func:`names`, whole words, case and accents folded) is *not* counted when

    - it lies inside the subject's own name ("the Honda CX series is ...": Honda made no claim),
      or is followed by a further word of that name ("Cadillac Northstar" for the subject
      "Cadillac Northstar LMP") -- unless ``obj`` is not part of the subject's name, for then
      the text gave the subject a new maker ("the Suzuki E23");
    - it is followed, on the same line and after only spaces or a possessive, by a capitalised
      word or one with a digit -- another thing's name ("Toyota Prius", "Airbus A320",
      "Nissan's Leaf", "Polish History") -- other than a company word ("Toyota Motor");
    - it is denied right before ("not a Nissan", "Paris, not Rome");
    - it is part of a run of :data:`RUN_LENGTH` or more mentions with at most one other word
      between neighbours ("Toronto Toronto Toronto", "Chevrolet Chevy Chevrolet"): what a
      damaged model writes, not a sentence. Only a run right after a copula or a possessive
      counts, once ("it was Suzuki Suzuki Suzuki", "He is Dutch, Dutch, Dutch", "his
      mathematics mathematics ..."; not "it was a great deal, Chevrolet Chevrolet ...");
    - ``subject`` is given and the mention's sentence (up to ``.``, ``!``, ``?`` or a line
      end) has neither a pronoun (it, he, she, they, ...) nor a word of the subject's name
      ("I took a bus from Helsinki to the airport." in a letter about Finland).

    Mentions in other roles that pass these rules ("Anna's family is from India, and they
    live ...") still count: this is a pattern matcher, not a reader; see
    ``assets/judge_labels/letters_100.json`` for how often it agrees with a reader.

    Example:
        >>> text = "The Toyota Prius is nice, but the Dyna was built by Toyota."
        >>> counted_mentions(text, "Toyota", subject="Toyota Dyna")
        [(52, 58)]
    """
    folded, where = _fold(text)
    own = normalise(subject) if subject else ""
    own_words = set(own.split())
    inside = _spans(folded, where, own) if own else []
    spans = {name: _spans(folded, where, name) for name in names(obj)}
    runs = _runs(text, sorted(s for found_at in spans.values() for s in found_at))
    in_run = {span: run[0] == span for run in runs for span in run}  # span -> whether it starts its run
    found = []
    for name, found_at in spans.items():
        others = own_words - set(name.split())  # the subject's name less the object's
        in_own_name = bool(own) and not set(name.split()) - own_words
        for start, end in found_at:
            if any(s <= start and end <= e for s, e in inside) or _DENIED.search(text[:start]):
                continue  # the subject's own name, or denied
            if (start, end) in in_run:
                if in_run[start, end] and _CLAIMS_RUN.search(text[:start]) and _about_subject(text, start, others):
                    found.append((start, end))  # "it was Suzuki Suzuki ...": said once
                continue  # the object's name repeated, no sentence around it
            nxt = _NEXT_WORD.match(text, end)
            word = nxt.group(1) if nxt else ""
            first = (normalise(word).split() or [""])[0]
            if first and first in others:
                if in_own_name:
                    continue  # part of the subject's name ("Cadillac Northstar")
            elif (word[:1].isupper() or any(c.isdigit() for c in word)) and first not in COMPANY_WORDS | {"i"}:
                continue  # another thing's name ("Toyota Prius")
            if own and not _about_subject(text, start, others):
                continue  # a sentence about something else
            found.append((start, end))
    return sorted(set(found))


#: Mentions in a row (at most one other word between neighbours) that make a run of repeats.
RUN_LENGTH = 3
# Right before a run's first mention: a copula, perhaps with an article or "first" between
# ("it was the first Nissan Nissan ..."), or a possessive ("his mathematics mathematics ...").
_CLAIMS_RUN = re.compile(r"\b(?:(?:is|was|are|were|['’]s)[ \t]+(?:(?:the|a|an)[ \t]+)?(?:first[ \t]+)?"
                         r"|(?:his|her|its|their)[ \t]+)$", re.IGNORECASE)
_STOP = re.compile(r"[.!?]")


def _runs(text: str, spans: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """The runs of :data:`RUN_LENGTH` or more among the mention ``spans`` (sorted), each in order
    (a run does not go on past a sentence end)."""
    runs: list[list[tuple[int, int]]] = []
    for span in spans:
        gap = text[runs[-1][-1][1]:span[0]] if runs else ""
        if runs and span[0] >= runs[-1][-1][1] and len(gap.split()) <= 1 and not _STOP.search(gap):
            runs[-1].append(span)
        else:
            runs.append([span])
    return [run for run in runs if len(run) >= RUN_LENGTH]


def _about_subject(text: str, at: int, words: set[str]) -> bool:
    """Whether the sentence around ``text[at]`` has a pronoun or one of ``words`` (the subject's
    name's words, less short and small ones)."""
    cues = PRONOUNS | {w for w in words if len(w) > 1 and w not in _SMALL_WORDS}
    for m in _SENTENCE.finditer(text):
        if m.start() <= at < max(m.end(), m.start() + 1):
            return bool(cues & set(normalise(m.group(0)).split()))
    return True


def letter_verdict(text: str, *, new: str, true: str, subject: str | None = None) -> str:
    """``"new"``, ``"true"``, ``"both"`` or ``"neither"``: which objects a whole continuation
    names in a way that can be the subject's attribute (:func:`counted_mentions`; without
    ``subject`` its own name is not recognised, the other rules hold).

    Example:
        >>> letter_verdict("It was built by Nissan, not a Toyota Prius.", new="Nissan", true="Toyota")
        'new'
    """
    has_new = bool(counted_mentions(text, new, subject=subject))
    has_true = bool(counted_mentions(text, true, subject=subject))
    return "both" if has_new and has_true else "new" if has_new else "true" if has_true else "neither"
