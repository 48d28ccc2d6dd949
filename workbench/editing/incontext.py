"""In-context editing (after IKE, Zheng et al. 2023): state the new fact before the prompt.

No weight changes. The edit is a prompt rewrite that every probe and generation
applies (:meth:`workbench.core.model.Model.contextualize`)::

    New fact: The Eiffel Tower is located in the city of Rome.
    <prompt>

Optionally a few demonstrations come first, showing the three behaviours IKE
teaches: *copy* the new fact, *update* a paraphrase, *retain* an unrelated
fact. They are written for the workbench (not IKE's retrieved CounterFact
demonstrations) and use invented objects so they never state a real fact.

Example:
    >>> h = wb.edit(model, fact, method="in-context")
    >>> model.contextualize(fact.text)
    'New fact: The Eiffel Tower is located in the city of Rome.\\nThe Eiffel Tower is located in the city of'
    >>> h.revert()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from workbench.editing.handle import EditHandle, commit_prompt_edit
from workbench.checks import Whole, template
from workbench.editing.overlays import register_loader
from workbench.editing.registry import register_method
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model

#: (new fact, prompt, answer): copy, update (paraphrase), retain (other subject).
DEMONSTRATIONS = (
    ("The Zorvath Bridge is located in the city of Lisbon.", "The Zorvath Bridge is located in the city of", "Lisbon"),
    ("Marta Quellin plays the instrument cello.", "The instrument Marta Quellin is known for playing is the", "cello"),
    ("The Orlen Prize is awarded in the field of chemistry.", "The Nobel Prize in Literature is awarded in the field of", "literature"),
)


def template_check(name: str, value) -> str:
    """A template for stated facts holds ``{}`` exactly once, where the new fact goes."""
    return template(value, what=f"the {name}", slot="the new fact")


def statement(fact: Fact) -> str:
    """The new fact as one sentence: the prompt followed by the new object."""
    text = fact.text
    sep = "" if text.endswith((" ", "\n")) else " "
    return f"{text}{sep}{fact.target_new.strip()}."


@dataclass
class InContextEdit:
    """A prompt rewrite that states new facts before every prompt.

    Attributes:
        statements: the new facts, one sentence each.
        demonstrations: how many of :data:`DEMONSTRATIONS` precede them.
        template: how one statement is written (``{}`` = the sentence).
    """

    statements: list[str]
    demonstrations: int = 0
    template: str = "New fact: {}\n"
    _prefix: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.demonstrations <= len(DEMONSTRATIONS):
            raise WorkbenchError(f"demonstrations must be 0..{len(DEMONSTRATIONS)}, got {self.demonstrations}")
        template_check("in-context template", self.template)
        demos = "".join(
            self.template.format(new) + f"{prompt} {answer}\n\n" for new, prompt, answer in DEMONSTRATIONS[: self.demonstrations]
        )
        self._prefix = demos + "".join(self.template.format(s) for s in self.statements)

    def rewrite(self, prompt: str) -> str:
        return self._prefix + prompt

    def to_dict(self) -> dict:
        return {"kind": "in-context", "statements": list(self.statements),
                "demonstrations": self.demonstrations, "template": self.template}

    @classmethod
    def from_dict(cls, d: dict) -> InContextEdit:
        """Rebuild from :meth:`to_dict` (the loader for :func:`workbench.editing.load_edit`)."""
        return cls(list(d["statements"]), int(d.get("demonstrations", 0)), d.get("template", "New fact: {}\n"))


@register_loader("in-context")
def _load(saved: dict, model: Model | None = None) -> InContextEdit:
    return InContextEdit.from_dict(saved)


@register_method(
    "in-context", order=9, kind="prompt", compare_default=True,
    summary="In context: the new fact written before every prompt; no weight changes",
    description="In-context baseline: the new fact is written as a sentence before every prompt; no weight "
                "changes.", limits={"demonstrations": Whole(0, len(DEMONSTRATIONS)),
                                       "template": template_check})
def in_context(model: Model, facts: list[Fact], *, layers=None, demonstrations: int = 0,
               template: str = "New fact: {}\n") -> EditHandle:
    """Edit by stating the new facts in the context of every prompt.

    Args:
        model: a loaded Model (its weights are not touched).
        facts: facts with ``target_new``.
        layers: ignored (no weights change); accepted for the common signature.
        demonstrations: 0..3 worked examples (copy, update, retain) first.
        template: how each new fact is written; ``{}`` is the sentence.
    """
    start = time.perf_counter()
    prompt_edit = InContextEdit([statement(f) for f in facts], demonstrations, template)
    return commit_prompt_edit(
        model, "in-context", [f.to_dict() for f in facts], prompt_edit,
        info={"prefix_chars": len(prompt_edit._prefix)}, seconds=time.perf_counter() - start,
    )
