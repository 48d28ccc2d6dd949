"""Build the bundled datasets in assets/ from the offline data in assets/data/.

Keeps the facts the default model gets right (its top-1 next token begins the
true object, ROME's criterion) and writes them in the workbench format:

- assets/known_trace_facts.json: ROME's known_1000 facts the model knows, for tracing.
- assets/known_facts.json: edit facts the model knows, from two sources:
  * CounterFact records (EasyEdit's flat format: one paraphrase, one neighbour);
  * known_1000 facts turned into CounterFact-style edits: the new object is the
    true object of another fact of the same relation (seeded choice, as CounterFact
    does); paraphrases are the relation's other templates with the same subject;
    neighbours are other known subjects of the relation sharing the true object;
    implications compose the new object with a second known fact about it
    (e.g. new country -> that country's capital), in the style of RippleEdits.

Run: .venv/bin/python scripts/build_dataset.py [--model gemma-3-270m]
Prints the counts recorded in the README.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict

import workbench as wb
from workbench.facts import ASSETS, Fact, Implication

# (relation of the edited fact, relation of a fact about the new object) ->
# a prompt template for the consequence. The consequence's answer is the
# second fact's true object, taken from the data, not written by hand.
COMPOSITIONS = {
    ("P17", "P36"): "{} is located in a country whose capital city is",
    ("P17", "P37"): "{} is located in a country whose official language is",
    ("P17", "P30"): "{} is located in a country on the continent of",
    ("P27", "P36"): "{} is a citizen of a country whose capital city is",
    ("P27", "P37"): "{} is a citizen of a country whose official language is",
    ("P495", "P36"): "{} comes from a country whose capital city is",
    ("P495", "P37"): "{} comes from a country whose official language is",
    ("P495", "P30"): "{} comes from a country on the continent of",
    ("P36", "P17"): "{} has a capital city located in the country of",
    ("P20", "P17"): "{} died in a city located in the country of",
    ("P937", "P17"): "{} worked in a city located in the country of",
    ("P159", "P17"): "{} has its headquarters in a city located in the country of",
}


def derived_edit_facts(raw: list[dict], known: list[Fact], *, seed: int = 0) -> list[Fact]:
    """CounterFact-style edit facts from the known_1000 facts the model knows."""
    rng = random.Random(seed)
    templates: dict[str, list[str]] = defaultdict(list)
    for r in raw:
        if r["template"] not in templates[r["relation_id"]]:
            templates[r["relation_id"]].append(r["template"])
    by_relation: dict[str, list[Fact]] = defaultdict(list)
    for f in known:
        by_relation[f.relation_id].append(f)
    # What the model knows about each object-as-subject, for implications.
    about: dict[tuple[str, str], str] = {}
    for f in known:
        about[(f.subject.strip(), f.relation_id)] = f.target_true
    out = []
    seen = set()
    for f in known:
        if (f.subject, f.relation_id) in seen:
            continue
        seen.add((f.subject, f.relation_id))
        objects = sorted({g.target_true for g in by_relation[f.relation_id]} - {f.target_true})
        if not objects:
            continue
        new = rng.choice(objects)
        paraphrases = [t.format(f.subject) for t in templates[f.relation_id] if t != f.prompt][:3]
        neighbours = [
            g.text for g in by_relation[f.relation_id]
            if g.target_true == f.target_true and g.subject != f.subject
        ]
        rng.shuffle(neighbours)
        implications = [
            Implication(prompt.format(f.subject), about[(new, r2)])
            for (r1, r2), prompt in COMPOSITIONS.items()
            if r1 == f.relation_id and (new, r2) in about
        ]
        out.append(Fact(
            subject=f.subject, prompt=f.prompt, target_true=f.target_true, target_new=new,
            paraphrase_prompts=paraphrases, neighborhood_prompts=neighbours[:5],
            implication_prompts=implications, case_id=f"known-{f.case_id}", relation_id=f.relation_id,
        ))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args()
    model = wb.load_model(args.model)
    counts = {}

    raw_known = json.loads((ASSETS / "data" / "known_1000.json").read_text())
    known = wb.filter_known(model, wb.read_facts(raw_known))
    wb.write_facts(known, ASSETS / "known_trace_facts.json")
    counts["known_trace_facts.json"] = {"source": "known_1000.json", "total": len(raw_known), "kept": len(known)}

    counterfact = wb.read_facts(ASSETS / "data" / "counterfact-edit-1k.json")
    cf_known = wb.filter_known(model, counterfact)
    derived = derived_edit_facts(raw_known, list(known))
    edit_facts = list(cf_known) + derived
    wb.write_facts(edit_facts, ASSETS / "known_facts.json")
    counts["known_facts.json"] = {
        "counterfact_total": len(counterfact), "counterfact_kept": len(cf_known),
        "derived_from_known_1000": len(derived),
        "with_neighbours": sum(bool(f.neighborhood_prompts) for f in edit_facts),
        "with_implications": sum(bool(f.implication_prompts) for f in edit_facts),
        "total": len(edit_facts),
    }
    print(json.dumps({"model": args.model, **counts}))


if __name__ == "__main__":
    main()
