"""Retrieval chain: the retrieval memory, plus the first hop of a nested question asked of the model.

The retrieval memory (:mod:`workbench.editing.retrieval`) writes the stored facts a
prompt names before it. A multi-hop question names its subject inside a description
of another entity -- "The official language of *the country where the Eiffel Tower
is located* is" -- and the edited fact (the Eiffel Tower is in Rome) decides that
entity, the *bridge*, without saying it. This method makes the bridge explicit, in
the spirit of MeLLo (Zhong et al. 2023: decompose the question, answer each
sub-question, check the answers against a memory of edited facts):

1. **Recall.** The stored facts the prompt recalls, exactly as ``retrieval`` does.
2. **Decompose.** If the prompt is a nested noun phrase, "The <property> of the
   <noun> <relative clause> is" (or "What is the <property> of the <noun> <clause>?"),
   its bridge question is "The <noun> <relative clause> is" (:func:`bridge_question`).
3. **Ask.** The model answers the bridge question greedily, after the recalled
   facts and cued for a name ("… is the country of"), with every text edit set aside (weights and layer memories stay as they
   are); the answer is cut at the first punctuation or line end. Answers are kept per
   context until an edit is applied or reverted.
4. **Look up.** Stored facts whose subject the answer names (the memory's second hop,
   through the model's own answer: an edit of the capital of Italy reaches "the
   capital of the country where the Colosseum is").
5. **Write.** Before the prompt: the recalled facts, the bridge statement ("The country
   where the Eiffel Tower is located is Italy.") and the facts the answer found.

The bridge statement is written only when the memory took part -- a fact was
recalled, or the answer named a stored subject -- so a neighbour prompt (another
subject, nothing stored) reads exactly what plain ``retrieval`` gives it: nothing.
A prompt that is not nested is rewritten exactly as by ``retrieval``.

What this is not: the decomposition is a pattern over nested noun phrases, not a plan
the model writes (Gemma 3 270M cannot write one reliably); MeLLo's idea carries over,
not its prompts or code. A chain edit joins the model's retrieval memory: stacked with
``retrieval`` edits, one memory holds all their facts and the chain runs for every
lookup while a chain edit is active.

Example:
    >>> fact = wb.Fact("Trento", "{} is located in the country of", "Italy", "Brazil")
    >>> h = wb.edit(model, fact, method="retrieval-chain")                    # doctest: +SKIP
    >>> print(model.contextualize("The official language of the country where Trento is located is"))  # doctest: +SKIP
    New fact: Trento is located in the country of Brazil.
    New fact: The country where Trento is located is Brazil.
    The official language of the country where Trento is located is
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import NamedTuple
from contextlib import contextmanager

from workbench import probing
from workbench.checks import Whole
from workbench.editing.factstore import normalize
from workbench.editing.handle import EditHandle, commit_prompt_edit
from workbench.editing.incontext import statement
from workbench.editing.overlays import register_loader
from workbench.editing.registry import register_method
from workbench.editing.retrieval import (
    _TEMPLATE,
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    LIMITS,
    Recall,
    RetrievalEdit,
)
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model

#: Tokens the model may spend on a bridge answer: an entity name, not a sentence.
DEFAULT_ANSWER_TOKENS = 8
#: Words kept of an answer; a longer one is a sentence, and the rest is not the entity.
MAX_ANSWER_WORDS = 5
#: Bridge answers kept per chain edit (one per context the model was asked in).
CACHE_SIZE = 512

_RELATIVE = r"(?:where|in\s+which|of\s+which|to\s+which|from\s+which|at\s+which|on\s+which|for\s+which|by\s+which|whose|which|that|who|whom)"
#: The bridge noun: one or two words ("country", "sports team"), the second not a preposition or relative word.
_NOUN = r"[^\W\d_]+(?:[\s-](?!(?:of|in|to|from|at|on|for|by|where|whose|which|that|who|whom)\b)[^\W\d_]+)?"
_BRIDGE = rf"(?P<bridge>the\s+(?P<noun>{_NOUN})\s+{_RELATIVE}\s+.+?)"
_STATEMENT = re.compile(rf"^the\s+(?P<property>.+?)\s+of\s+{_BRIDGE}\s+(?P<verb>is|was|are|were)(?:\s+the)?$",
                        re.IGNORECASE | re.DOTALL)
_QUESTION = re.compile(rf"^(?:what|which|who)\s+(?P<verb>is|was|are|were)\s+the\s+(?P<property>.+?)\s+of\s+{_BRIDGE}\s*\?$",
                       re.IGNORECASE | re.DOTALL)
_QA_TAIL = re.compile(r"\s*(?:A|Answer)\s*:\s*$")
_QA_HEAD = re.compile(r"^(?:Q|Question)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_ANSWER_END = re.compile(r"[.,;:!?()\[\]\"\n]|\s[-–—]\s")


def _last_sentence(prompt: str) -> str:
    text = _QA_TAIL.sub("", prompt.strip())
    pieces = [p for p in _SENTENCE_END.split(text) if p.strip()]
    return _QA_HEAD.sub("", pieces[-1].strip()) if pieces else ""


class Nested(NamedTuple):
    """A nested prompt taken apart.

    Attributes:
        question: the bridge question ("The country where the Eiffel Tower is located is").
        property: what the prompt asks of the bridge entity ("official language").
        noun: what the bridge entity is ("country").
    """

    question: str
    property: str
    noun: str

    @property
    def cue(self) -> str:
        """How the model is asked: "… is the country of", which Gemma 3 270M answers with a name
        far more often than "… is" (then "located in the province of", "the largest in Europe")."""
        return f"{self.question} the {self.noun} of"


def decompose(prompt: str) -> Nested | None:
    """The bridge question of a nested prompt, the property it asks of the bridge and its noun, or None.

    Only the prompt's last sentence is read (a prefix of other text is allowed), in one of
    two forms: "The <property> of the <noun> <relative clause> is" and
    "What is the <property> of the <noun> <relative clause>?".

    Example:
        >>> decompose("The capital of the country of which Dante is a citizen is")
        Nested(question='The country of which Dante is a citizen is', property='capital', noun='country')
        >>> decompose("The Eiffel Tower is located in the city of") is None
        True
    """
    text = _last_sentence(prompt)
    match = _STATEMENT.match(text) or _QUESTION.match(text)
    if match is None:
        return None
    bridge = " ".join(match["bridge"].split())
    verb = match["verb"].lower()
    return Nested(f"The{bridge[3:]} {verb}", " ".join(match["property"].split()), " ".join(match["noun"].split()).lower())


def bridge_question(prompt: str) -> str | None:
    """The question that names the bridge entity of a nested prompt, or None when it is not nested.

    Example:
        >>> bridge_question("The official language of the country where the Eiffel Tower is located is")
        'The country where the Eiffel Tower is located is'
        >>> bridge_question("What is the capital of the country where the Colosseum is located?")
        'The country where the Colosseum is located is'
    """
    found = decompose(prompt)
    return found.question if found else None


def short_answer(text: str) -> str | None:
    """The entity a greedy continuation names: up to the first punctuation or line end, at most
    :data:`MAX_ANSWER_WORDS` words; None when nothing is left.

    Example:
        >>> short_answer(" Italy, and its capital is Rome.")
        'Italy'
    """
    head = _ANSWER_END.split(text, maxsplit=1)[0]
    kept = head.split()[:MAX_ANSWER_WORDS]
    return " ".join(kept) if kept and normalize(" ".join(kept)) else None


@contextmanager
def _text_edits_aside(model: Model) -> Iterator[None]:
    """Inside, the model reads text as written: no prompt is rewritten (the chain's own included);
    weights and layer memories (GRACE, WISE: edits with a hook) still act."""
    saved = list(model.prompt_edits)
    model.prompt_edits[:] = [e for e in saved if hasattr(e, "attach")]
    try:
        yield
    finally:
        model.prompt_edits[:] = saved


class ChainEdit(RetrievalEdit):
    """A retrieval memory that also answers the bridge question of a nested prompt (see module doc).

    Attributes:
        model: the model asked the bridge questions (None: the chain is off, plain retrieval).
        max_new_tokens: tokens of a bridge answer.
    """

    @property
    def chains(self) -> bool:  # type: ignore[override]
        return self.model is not None  # one loaded without a model cannot ask; another chain edit may

    def __init__(self, keys: list[str], statements: list[str], *, model: Model | None = None,
                 max_new_tokens: int = DEFAULT_ANSWER_TOKENS, **settings) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= 32:
            raise WorkbenchError(f"max_new_tokens is how long a bridge answer may be, 1..32 tokens; got {max_new_tokens!r}")
        if model is not None and settings.get("active_list") is None:
            settings["active_list"] = model.prompt_edits
        super().__init__(keys, statements, **settings)
        self.model, self.max_new_tokens = model, max_new_tokens
        self._answers: dict[str, str | None] = {}
        self._state: tuple = ()

    def _edits_now(self) -> tuple:
        model = self.model
        return tuple(model.prompt_edits) + tuple(getattr(model, "edit_stack", ()))

    def ask(self, context: str) -> str | None:
        """The model's short greedy answer after ``context`` (text edits set aside), or None.

        Kept per context while the same edits are applied: a probe that reads a prompt
        twice asks once.
        """
        if self.model is None:
            return None
        now = self._edits_now()
        if len(now) != len(self._state) or any(a is not b for a, b in zip(now, self._state)):
            self._answers.clear()  # the memory or the weights changed: the answers may too
            self._state = now
        if context not in self._answers:
            with _text_edits_aside(self.model):
                text = probing.generate(self.model, context, max_new_tokens=self.max_new_tokens)
            if len(self._answers) >= CACHE_SIZE:
                self._answers.pop(next(iter(self._answers)))
            self._answers[context] = short_answer(text)
        return self._answers[context]

    def chain_steps(self, prompt: str, found: list[Recall], lead: RetrievalEdit) -> list[Recall]:
        """``found`` (what the memory recalled for ``prompt``) and the chain's steps after it."""
        nested = decompose(prompt)
        if nested is None:
            return found
        question, prop = nested.question, nested.property
        context = "".join(lead.template.format(r.statement) for r in found) + nested.cue
        answer = self.ask(context)
        if not answer:
            return found
        seen = {r.statement for r in found}
        # Rank by the asked property ("capital" puts the capital fact first), keep those the answer names.
        named = []
        for m in lead.members() or [lead]:
            if not m.mention:
                continue
            own = {x.index for x in m.store.mentions(answer)}
            named += [(x, m) for x in m.store.mentions(f"{answer} {prop}") if x.index in own]
        named.sort(key=lambda p: -p[0].relation_score)
        facts = []
        for x, m in named:
            if m.statements[x.index] not in seen and len(facts) < lead.top_k:
                seen.add(m.statements[x.index])
                facts.append(Recall(m.statements[x.index], m.keys[x.index], m.subjects[x.index], "chain",
                                    x.relation_score, x.name))
        if not found and not facts:
            return found  # the memory took no part: the model's own answer is not an edit
        bridge = Recall(f"{question} {answer}.", question, None, "bridge", 1.0, normalize(answer))
        return found + [bridge] + facts[::-1]  # the best chained fact last, next to the prompt

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(kind="retrieval-chain", max_new_tokens=self.max_new_tokens)
        return d

    @classmethod
    def from_dict(cls, d: dict, model: Model | None = None) -> ChainEdit:
        """Rebuild from :meth:`to_dict`; ``model`` answers the bridge questions and holds the shared memory."""
        return cls(d["keys"], d["statements"], model=model, max_new_tokens=d.get("max_new_tokens", DEFAULT_ANSWER_TOKENS),
                   **cls.saved_settings(d))


@register_loader("retrieval-chain")
def _load(saved: dict, model: Model | None = None) -> ChainEdit:
    return ChainEdit.from_dict(saved, model)


@register_method(
    "retrieval-chain", order=11, kind="prompt", compare_default=False,
    summary="Retrieval chain: the retrieval memory, plus the bridge of a nested question answered by the model",
    description="Retrieval memory with question decomposition (after MeLLo): for a nested prompt (\"the capital of "
                "the country where X is\"), the model answers the inner question after the recalled facts, and that "
                "answer, with any stored facts it names, is written before the prompt; no weight changes.",
    limits={**LIMITS, "max_new_tokens": Whole(1, 32)})
def retrieval_chain(model: Model, facts: list[Fact], *, layers=None, threshold: float = DEFAULT_THRESHOLD,
                    template: str = _TEMPLATE, top_k: int = DEFAULT_TOP_K, mention: bool = True, hops: int = 1,
                    max_new_tokens: int = DEFAULT_ANSWER_TOKENS) -> EditHandle:
    """Edit by adding the facts to the model's retrieval memory, with the chain on.

    Args:
        model: a loaded Model (its weights are not touched; it answers the bridge questions).
        facts: facts with ``target_new``.
        layers: ignored (no weights change).
        threshold, template, top_k, mention, hops: as for ``retrieval``.
        max_new_tokens: tokens of a bridge answer (default 8; cut at the first punctuation).

    Example:
        >>> h = wb.edit(model, fact, method="retrieval-chain")     # doctest: +SKIP
        >>> wb.editing.retrieval.explain(model, "The capital of the country where Trento is located is")  # doctest: +SKIP
        [{..., 'why': 'mention'}, {'statement': 'The country where Trento is located is Brazil.', ..., 'why': 'bridge'}]
    """
    start = time.perf_counter()
    prompt_edit = ChainEdit([f.text for f in facts], [statement(f) for f in facts], model=model,
                            max_new_tokens=max_new_tokens, subjects=[f.subject for f in facts], threshold=threshold,
                            template=template, top_k=top_k, mention=mention, hops=hops)
    return commit_prompt_edit(
        model, "retrieval-chain", [f.to_dict() for f in facts], prompt_edit,
        info={"threshold": threshold, "top_k": top_k, "hops": hops, "max_new_tokens": max_new_tokens,
              "recall": "mention, then similarity" if mention else "similarity",
              "chain": "nested prompts: the bridge question answered by the model",
              "memory_size": sum(len(m.keys) for m in prompt_edit.members()) + len(facts),
              "explain": "workbench.editing.retrieval.explain(model, prompt)"},
        seconds=time.perf_counter() - start,
    )

