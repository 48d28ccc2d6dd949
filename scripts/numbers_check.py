"""Write a 3-kind trace's, ROME, MEMIT and retrieval edits' and an evaluation's numbers on a model to JSON, or compare two such files.

For changes that should not change behaviour (a restructure, a refactor): run it on
the old checkout and on the new one, then compare. Only the public API is used, so
the same script runs on both sides.

    PYTHONPATH=/path/to/old/checkout python scripts/numbers_check.py dump before.json
    python scripts/numbers_check.py dump after.json
    python scripts/numbers_check.py compare before.json after.json    # exit 1 on a difference > --tol
"""

from __future__ import annotations

import argparse
import json
import sys


def dump(path: str, model_name: str | None) -> None:
    import torch

    import workbench as wb

    model = wb.load_model(model_name) if model_name else wb.load_model()
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
                   paraphrase_prompts=["The Eiffel Tower can be found in"])
    out: dict = {"workbench": wb.__file__, "model": model.name}
    r = wb.trace(model, fact, kinds="all", samples=10)
    out["trace"] = {k: v.tolist() for k, v in r.scores.items()}
    out["trace_probs"] = [r.clean_prob, r.corrupted_prob, r.noise_std]
    before = {n: p.detach().clone() for n, p in model.hf_model.named_parameters()}
    handle = wb.edit(model, fact, method="rome")
    out["rome_info"] = {k: handle.info[k] for k in ("layer", "facts")}
    probes = wb.probe(model, [fact.text, *fact.paraphrase_prompts], targets=["Paris", "Rome"])
    out["probe"] = [[t.prob for t in p.targets] for p in probes.prompts]
    out["weight_change"] = {
        n: [float((p.detach() - before[n]).double().abs().sum()), float((p.detach() - before[n]).double().norm())]
        for n, p in model.hf_model.named_parameters() if not torch.equal(p, before[n])
    }
    handle.revert()
    out["revert_bitwise"] = all(torch.equal(p, before[n]) for n, p in model.hf_model.named_parameters())

    facts = wb.bundled_facts()
    known = list(wb.filter_known(model, facts[:40]))[:10]
    h = wb.edit(model, known, method="memit")
    out["memit_change"] = {
        n: [float((p.detach() - before[n]).double().abs().sum()), float((p.detach() - before[n]).double().norm())]
        for n, p in model.hf_model.named_parameters() if not torch.equal(p, before[n])
    }
    out["memit_probe"] = [[t.prob for t in p.targets] for p in
                          wb.probe(model, [f.text for f in known], targets=[known[0].target_new]).prompts]
    h.revert()
    h = wb.edit(model, fact, method="retrieval")
    out["retrieval_probe"] = [[t.prob for t in p.targets] for p in
                              wb.probe(model, [fact.text, *fact.paraphrase_prompts], targets=["Paris", "Rome"]).prompts]
    h.revert()
    report = wb.evaluate(model, facts, method="rome", limit=10, every=5,
                         metrics=("teacher", "generation", "question", "plus"))
    out["evaluate_summary"] = {k: v for k, v in report.summary.items()
                               if k not in ("seconds_total", "seconds_per_edit", "seconds")
                               and not k.startswith("seconds")}
    out["evaluate_rows"] = [{k: v for k, v in r.to_dict().items() if not k.startswith("seconds")}
                            for r in report.rows]
    out["revert_bitwise_end"] = all(torch.equal(p, before[n]) for n, p in model.hf_model.named_parameters())
    with open(path, "w") as f:
        json.dump(out, f)
    print(f"wrote {path}: ROME at layer {out['rome_info']['layer']}, p(Paris, Rome) after = {out['probe'][0]}")


def _numbers(x) -> list[float]:
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in _numbers(x[k])]
    if isinstance(x, list):
        return [v for item in x for v in _numbers(item)]
    if isinstance(x, (bool, int, float)):
        return [float(x)]
    return []


def compare(a_path: str, b_path: str, tol: float) -> int:
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    worst = 0.0
    for key in sorted(set(a) | set(b)):
        if key == "workbench":
            continue
        xa, xb = _numbers(a.get(key)), _numbers(b.get(key))
        if len(xa) != len(xb):
            print(f"{key}: {len(xa)} numbers against {len(xb)}")
            return 1
        diff = max((abs(p - q) for p, q in zip(xa, xb)), default=0.0)
        worst = max(worst, diff)
        print(f"{key}: {len(xa)} numbers, max |difference| {diff:.3g}")
    print(f"largest difference {worst:.3g} (tolerance {tol:g})")
    return 0 if worst <= tol else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dump", help="write the numbers to a JSON file")
    d.add_argument("path")
    d.add_argument("--model", default=None, help="model name (default: the workbench's default)")
    c = sub.add_parser("compare", help="compare two dumps")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    if args.what == "dump":
        dump(args.path, args.model)
        return 0
    return compare(args.a, args.b, args.tol)


if __name__ == "__main__":
    sys.exit(main())
