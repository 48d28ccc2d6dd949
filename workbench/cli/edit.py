"""``workbench edit``: edit one fact into the model and probe before and after."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from workbench.cli.arguments import add_model_argument, check_value, emit_json


def register(sub) -> None:
    p = sub.add_parser("edit", help="edit a fact (see `workbench methods`) and probe before/after")
    p.add_argument("--method", default=None, help="editing method (see `workbench methods`; default: the first listed)")
    p.add_argument("--subject", required=True)
    p.add_argument("--prompt", required=True, help='relation template with {} for the subject, e.g. "The {} is located in"')
    p.add_argument("--target-new", required=True)
    p.add_argument("--target-true", default=None, help="the current object (default: the model's top-1 token)")
    p.add_argument("--layers", default=None, help="comma-separated layers, e.g. 5,6 (default: the method's default)")
    p.add_argument("--probe", action="append", default=[], metavar="PROMPT", help="extra prompt to probe (repeatable)")
    p.add_argument("--save", default=None, metavar="PATH", help="save the edit (safetensors + JSON)")
    p.add_argument("--overwrite", action="store_true", help="let --save replace an edit saved there before")
    p.add_argument("--min-prob", type=float, default=None, metavar="P",
                   help="refuse an edit that leaves p(new) below P (default 0.05; 0 keeps any edit)")
    add_model_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def _summary(model, prompts: list[str], new: str, true: str) -> list[dict]:
    from workbench.probing import probe

    res = probe(model, prompts, targets=[new, true], top_k=1)
    return [
        {"top": p.top[0].token, "p_new": p.targets[0].prob, "p_true": p.targets[1].prob} for p in res.prompts
    ]


def run(args: argparse.Namespace) -> int:
    from workbench.editing import edit, method_names, method_spec
    from workbench.editing.handle import edit_path
    from workbench.errors import WorkbenchError
    from workbench.facts import Fact, check_template
    from workbench.core.model import load_model
    from workbench.runtime.outputs import check_output
    from workbench.probing import probe

    layers = None
    if args.layers:
        try:
            layers = [int(x) for x in args.layers.split(",") if x.strip()]
        except ValueError:
            raise WorkbenchError(f"--layers must be comma-separated integers, got {args.layers!r}") from None
        check_value("edit", "layers", layers)
    # Everything that can be checked without the model is checked before it loads.
    args.method = method_spec(args.method).name if args.method is not None else method_names()[0]
    if not args.subject.strip():
        raise WorkbenchError("--subject is empty")
    if not args.target_new.strip():
        raise WorkbenchError("--target-new is empty")
    check_template(args.prompt)
    if args.save:
        # Both files it writes, checked (writable, not a folder or a device, not there
        # unless --overwrite) before the model loads.
        for path in (edit_path(args.save), Path(str(edit_path(args.save)) + ".json")):
            check_output(path, "--save", overwrite=args.overwrite)
    model = load_model(args.model)
    text = args.prompt.format(args.subject)
    true = args.target_true
    if true is None:
        true = probe(model, text, top_k=1)[0].top[0].token.strip()
        if not true or true.strip() == args.target_new.strip():
            raise WorkbenchError(
                f"the model's top token after the prompt is {true!r}; give --target-true explicitly"
            )
    fact = Fact(args.subject, args.prompt, true, args.target_new)
    prompts = [text, *args.probe]
    before = _summary(model, prompts, fact.target_new, true)
    start = time.perf_counter()
    handle = edit(model, fact, method=args.method, layers=layers,
                  **({} if args.min_prob is None else {"min_prob": args.min_prob}))
    seconds = time.perf_counter() - start
    after = _summary(model, prompts, fact.target_new, true)
    unsaved = _save(handle, args.save, args.overwrite) if args.save else None
    out = {
        "method": args.method, "layers": handle.layers, "seconds": seconds,
        "target_true": true, "target_new": fact.target_new,
        "probes": [{"prompt": p, "before": b, "after": a} for p, b, a in zip(prompts, before, after)],
    }
    if args.json:
        emit_json(out)
    else:
        _print(args, handle, seconds, true, fact, out)
    if unsaved:
        raise WorkbenchError(unsaved)
    return 0


def _save(handle, path: str, overwrite: bool) -> str | None:
    """Save the edit; if that fails (a full or read-only disk since the check), save it in a
    fallback folder. Returns None, or the line that says what happened and where it is."""
    from workbench.runtime.outputs import fallback_folders

    try:
        handle.save(path, overwrite=overwrite)
        return None
    except OSError as exc:
        reason = exc.strerror or str(exc)
    name = Path(path).name
    for folder in fallback_folders():
        spare = folder / f"workbench-{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        try:
            kept = handle.save(spare)
        except Exception:  # noqa: BLE001 - the next folder, then the message
            continue
        return f"could not save the edit to {path!r} ({reason}); it is saved in {str(kept)!r}"
    return f"could not save the edit to {path!r} ({reason}), nor in {', '.join(map(str, fallback_folders()))}"


def _print(args, handle, seconds, true, fact, out) -> None:
    print(f"{args.method} edit at layers {handle.layers} in {seconds:.1f} s: {true!r} -> {fact.target_new!r}")
    for row in out["probes"]:
        b, a = row["before"], row["after"]
        print(row["prompt"])
        print(f"    before: top {b['top']!r:<14} p_new={b['p_new']:.3g} p_true={b['p_true']:.3g}")
        print(f"    after:  top {a['top']!r:<14} p_new={a['p_new']:.3g} p_true={a['p_true']:.3g}")
