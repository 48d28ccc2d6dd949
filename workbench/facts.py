"""Facts to trace and edit, and readers for the datasets they come in.

A :class:`Fact` is a subject, a relation prompt template with ``{}`` where the
subject goes, the true object, an optional new object (for edits), and probe
prompts: paraphrases (should follow the edit), neighbourhood prompts (other
subjects, should keep the true object), implications (consequences of the new
fact, each with its own target) and generation prompts.

Readers detect the format from the records: ROME's CounterFact
(``requested_rewrite``), EasyEdit's flat CounterFact (``prompt``/``ground_truth``),
ROME's ``known_1000`` (``template``/``attribute``), and the workbench's own
(:meth:`Fact.to_dict`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from workbench import checks
from workbench.errors import DatasetError, WorkbenchError
from workbench.results import Result
from workbench.runtime import jsonfiles
from workbench.runtime.jsonfiles import read_text_bounded

log = logging.getLogger("workbench")

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = ASSETS / "known_facts.json"
#: The kinds an :class:`Implication` may name (RippleEdits' three and MQuAKE's multi-hop);
#: ``evaluate`` reports a rate for each (``implication_<kind>_score``).
IMPLICATION_KINDS = ("logical_generalisation", "compositionality", "multi_hop", "relation_specificity")


@dataclass(frozen=True)
class Implication(Result):
    """A consequence of the new fact: ``prompt`` should now continue with ``target``.

    ``kind`` says which (RippleEdits' names: ``logical_generalisation``, ``compositionality``,
    ``relation_specificity``; MQuAKE's ``multi_hop``); empty when a dataset does not say.
    """

    prompt: str
    target: str
    kind: str = ""


@dataclass(frozen=True)
class Fact(Result):
    """One (subject, relation, object) association and its probe prompts.

    Example:
        >>> f = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
        >>> f.text
        'The Eiffel Tower is located in the city of'
    """

    subject: str
    prompt: str
    target_true: str | None = None
    target_new: str | None = None
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    implication_prompts: tuple[Implication, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    case_id: str | int | None = None
    relation_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not self.subject.strip():
            raise WorkbenchError("the subject is empty")
        check_template(self.prompt)
        for name in ("target_true", "target_new"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise WorkbenchError(f"{name} is empty")
            if value is not None and len(value) > checks.MAX_TARGET_CHARS:
                raise WorkbenchError(f"{name} is {len(value):,} characters long; objects of at most "
                                     f"{checks.MAX_TARGET_CHARS} characters are edited and scored")
        if (
            self.target_true is not None
            and self.target_new is not None
            and self.target_true.strip() == self.target_new.strip()
        ):
            raise WorkbenchError(f"target_new equals target_true ({self.target_true!r}); nothing to edit")
        # Accept lists from callers, store tuples so a Fact stays hashable and immutable.
        for name in ("paraphrase_prompts", "neighborhood_prompts", "generation_prompts", "implication_prompts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            if len(getattr(self, name)) > checks.MAX_PROMPTS_PER_KIND:
                raise WorkbenchError(f"{name} holds {len(getattr(self, name)):,} prompts; a fact may carry at most "
                                     f"{checks.MAX_PROMPTS_PER_KIND:,} of each kind")
        object.__setattr__(
            self,
            "implication_prompts",
            tuple(i if isinstance(i, Implication) else Implication(**i) for i in self.implication_prompts),
        )

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.format(self.subject)

    def with_new(self, target_new: str) -> Fact:
        """A copy of this fact with another new object."""
        return replace(self, target_new=target_new)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        return {k: v for k, v in d.items() if v not in (None, [], ())}


def check_template(prompt) -> None:
    """A relation template holds exactly one ``{}`` (where the subject goes) and no other field.

    Other braces must be doubled (``{{``), as in :meth:`str.format`, which fills the template.

    Raises:
        WorkbenchError: no ``{}``, two of them, or a named or numbered field (``{x}``, ``{0}``).

    Example:
        >>> check_template("The {} is located in the city of")
        >>> check_template("The {x} is in")
        Traceback (most recent call last):
        ...
        workbench.errors.WorkbenchError: the prompt template has a field {x}: use '{}' exactly once where the subject goes (double other braces: '{{'), got 'The {x} is in'
    """
    checks.template(prompt, what="the prompt template", slot="the subject")


def _text(record: dict, index: int, key: str, *, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"record {index}: field {key!r} is missing or empty")
    return value


def _strs(record: dict, index: int, key: str) -> list[str]:
    value = record.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"record {index}: field {key!r} must be a list of strings")
    return value


def _template(prompt: str, subject: str, index: int) -> str:
    if "{}" in prompt:
        return prompt
    if subject not in prompt:
        raise DatasetError(f"record {index}: field 'prompt' does not contain the subject {subject!r}")
    return prompt.replace(subject, "{}", 1)


def _implications(record: dict, index: int) -> list[Implication]:
    value = record.get("implication_prompts", [])
    out = []
    for j, item in enumerate(value if isinstance(value, list) else [None]):
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not isinstance(item.get("target"), str):
            raise DatasetError(f"record {index}: field 'implication_prompts'[{j}] must be {{prompt, target}}")
        kind = item.get("kind", "")
        if not isinstance(kind, str) or (kind and kind not in IMPLICATION_KINDS):
            raise DatasetError(f"record {index}: field 'implication_prompts'[{j}].kind must be one of "
                               f"{', '.join(IMPLICATION_KINDS)} (or absent), got {kind!r}")
        out.append(Implication(item["prompt"], item["target"], kind))
    return out


def _from_rome(record: dict, i: int) -> Fact:
    rw = record.get("requested_rewrite")
    if not isinstance(rw, dict):
        raise DatasetError(f"record {i}: field 'requested_rewrite' must be an object")
    subject = _text(rw, i, "subject")
    for key in ("target_true", "target_new"):
        if not isinstance(rw.get(key), dict) or not isinstance(rw[key].get("str"), str):
            raise DatasetError(f"record {i}: field 'requested_rewrite.{key}.str' is missing")
    return Fact(
        subject=subject,
        prompt=_template(_text(rw, i, "prompt"), subject, i),
        target_true=rw["target_true"]["str"],
        target_new=rw["target_new"]["str"],
        paraphrase_prompts=_strs(record, i, "paraphrase_prompts"),
        neighborhood_prompts=_strs(record, i, "neighborhood_prompts"),
        implication_prompts=_implications(record, i),
        generation_prompts=_strs(record, i, "generation_prompts"),
        case_id=record.get("case_id"),
        relation_id=rw.get("relation_id"),
    )


def _from_easyedit(record: dict, i: int) -> Fact:
    subject = _text(record, i, "subject")
    rephrase = record.get("rephrase_prompt")
    locality = record.get("locality_prompt")
    return Fact(
        subject=subject,
        prompt=_template(_text(record, i, "prompt"), subject, i),
        target_true=_text(record, i, "ground_truth"),
        target_new=_text(record, i, "target_new"),
        paraphrase_prompts=[rephrase] if isinstance(rephrase, str) and rephrase else [],
        # EasyEdit's locality prompt is a CounterFact neighbour: another subject
        # sharing the true object, so it should keep predicting the true object.
        neighborhood_prompts=[locality] if isinstance(locality, str) and locality else [],
        implication_prompts=_implications(record, i),
        case_id=record.get("case_id"),
    )


def _from_known(record: dict, i: int) -> Fact:
    subject = _text(record, i, "subject")
    return Fact(
        subject=subject,
        prompt=_template(_text(record, i, "template"), subject, i),
        target_true=_text(record, i, "attribute"),
        case_id=record.get("known_id"),
        relation_id=record.get("relation_id"),
    )


def _from_workbench(record: dict, i: int) -> Fact:
    subject = _text(record, i, "subject")
    kwargs = {k: record[k] for k in ("case_id", "relation_id") if k in record}
    return Fact(
        subject=subject,
        prompt=_template(_text(record, i, "prompt"), subject, i),
        target_true=_text(record, i, "target_true", required=False),
        target_new=_text(record, i, "target_new", required=False),
        paraphrase_prompts=_strs(record, i, "paraphrase_prompts"),
        neighborhood_prompts=_strs(record, i, "neighborhood_prompts"),
        implication_prompts=_implications(record, i),
        generation_prompts=_strs(record, i, "generation_prompts"),
        **kwargs,
    )


FORMATS = {
    "counterfact": _from_rome,
    "easyedit": _from_easyedit,
    "known_1000": _from_known,
    "workbench": _from_workbench,
}


def detect_format(record: Any, index: int = 0) -> str:
    """Name the dataset format of one record (see :data:`FORMATS`)."""
    if not isinstance(record, dict):
        raise DatasetError(f"record {index} is not a JSON object")
    if "requested_rewrite" in record:
        return "counterfact"
    if "ground_truth" in record and "prompt" in record:
        return "easyedit"
    if "template" in record and "attribute" in record:
        return "known_1000"
    if "subject" in record and "prompt" in record:
        return "workbench"
    raise DatasetError(
        f"record {index} is in no known format (fields: {', '.join(sorted(record)) or 'none'}); "
        "read formats: ROME CounterFact (requested_rewrite), EasyEdit flat CounterFact "
        "(prompt, subject, target_new, ground_truth), ROME known_1000 (subject, template, attribute), "
        "workbench (subject, prompt, target_true, ...)"
    )


def _parse_dataset(text: str, path: Path) -> Any:
    """A dataset file's records: JSON, else JSON lines; depth-bounded; one-line errors."""
    what = f"dataset {str(path)!r}"
    try:
        try:
            return jsonfiles.loads(text, what)
        except json.JSONDecodeError:
            return [jsonfiles.loads(line, what) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{what} is not JSON or JSON lines ({exc.msg}, line {exc.lineno})") from None
    except WorkbenchError as exc:
        raise DatasetError(str(exc)) from None


def read_facts(source: str | Path | Sequence[dict]) -> list[Fact]:
    """Read facts from a JSON file (a list of records, or JSON lines) or from records.

    Example:
        >>> facts = read_facts("assets/data/known_1000.json")
        >>> facts[0].subject, facts[0].target_true
        ('Vinson Massif', 'Antarctica')
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            text = read_text_bounded(path, "dataset")
        except WorkbenchError as exc:
            raise DatasetError(str(exc)) from None
        records = _parse_dataset(text, path)
        if isinstance(records, dict):
            records = records.get("facts", [records])
    else:
        records = list(source)
        try:
            jsonfiles.check_depth(records, "the records")
        except WorkbenchError as exc:
            raise DatasetError(str(exc)) from None
    if not isinstance(records, list):
        raise DatasetError("a dataset must be a list of records")
    if not records:
        raise DatasetError("the dataset is empty")
    reader = FORMATS[detect_format(records[0])]
    facts = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DatasetError(f"record {i} is not a JSON object")
        try:
            facts.append(reader(record, i))
        except DatasetError:
            raise
        except WorkbenchError as exc:
            raise DatasetError(f"record {i}: {exc}") from None
    return facts


def write_facts(facts: Iterable[Fact], path: str | Path) -> None:
    """Write facts in the workbench format (readable by :func:`read_facts`)."""
    Path(path).write_text(json.dumps([f.to_dict() for f in facts], indent=1, ensure_ascii=False) + "\n")


def bundled_facts() -> list[Fact]:
    """The facts shipped in ``assets/known_facts.json``: CounterFact edits the default
    model gets right (built by ``scripts/build_dataset.py``)."""
    return read_facts(BUNDLED)


class FilteredFacts(list):
    """A list of the facts a model knows, remembering what was dropped.

    Attributes:
        dropped: the facts the model got wrong.
    """

    def __init__(self, kept: Iterable[Fact], dropped: Iterable[Fact]) -> None:
        super().__init__(kept)
        self.dropped = list(dropped)

    @property
    def summary(self) -> str:
        total = len(self) + len(self.dropped)
        return f"kept {len(self)} of {total} facts the model gets right; skipped {len(self.dropped)}"


def knows(model, facts: Sequence[Fact], *, batch_size: int = 32) -> list[bool]:
    """Whether the model's top-1 next token starts each fact's true object.

    The criterion of ROME's ``known_1000``: greedy decoding begins the true object.
    """
    from workbench.probing import probe

    missing = [i for i, f in enumerate(facts) if f.target_true is None]
    if missing:
        raise WorkbenchError(f"fact {missing[0]} has no target_true to check")
    result = probe(model, [f.text for f in facts], top_k=1, batch_size=batch_size)
    return [top_begins_true_object(model, fact, row.top[0].token) for fact, row in zip(facts, result.prompts)]


def top_begins_true_object(model, fact: Fact, top_token: str) -> bool:
    """Whether ``top_token`` (the model's top-1 after the prompt) is the first token of the true object."""
    from workbench.probing import target_ids

    return model.tokenizer.decode([target_ids(model, fact.text, fact.target_true)[0]]) == top_token


def filter_known(model, facts: Sequence[Fact], *, batch_size: int = 32) -> FilteredFacts:
    """Keep the facts the model gets right (top-1 begins the true object).

    Logs and returns how many were skipped: ``result.summary``, ``result.dropped``.

    Example:
        >>> kept = filter_known(model, read_facts("assets/data/known_1000.json")[:50])
        >>> kept.summary  # doctest: +SKIP
        'kept 31 of 50 facts the model gets right; skipped 19'
    """
    facts = list(facts)
    flags = knows(model, facts, batch_size=batch_size) if facts else []
    result = FilteredFacts(
        [f for f, ok in zip(facts, flags) if ok], [f for f, ok in zip(facts, flags) if not ok]
    )
    log.info(result.summary)
    return result
