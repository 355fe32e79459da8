"""Subcommands of this package (registered by zkfp.cli). Only argparse is imported here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protect", help="convert a transformers checkpoint into a Taylor-protected release")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="local checkpoint folder (config.json + safetensors)")
    p.add_argument("--out", required=True, metavar="RELEASE_DIR", help="release folder to write")
    p.add_argument("--terms", type=int, default=None, metavar="N",
                   help="Taylor terms per expanded neuron, 1..32 (default: 12, or what --slowdown 4 chooses at "
                        "hidden size ≥ 1024)")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="calibration text (UTF-8, or UTF-16/32 with a byte-order mark; tokenised with the "
                        "checkpoint's tokenizer) or token ids (JSON list or whitespace-separated integers); "
                        "default: seeded uniformly random token ids (no tokenizer needed)")
    p.add_argument("--fraction", type=float, default=None,
                   help="fraction of each MLP's neurons to expand, smallest calibrated ranges first (default ≈0.70; "
                        "with --slowdown, the most it may choose)")
    p.add_argument("--slowdown", type=float, default=None, metavar="X",
                   help="choose N and the expanded fraction so that a token takes X times as long as with the "
                        "source, as measured on the checkpoint's shape on this machine (1 thread); not with --terms "
                        "(default: 4 at hidden size ≥ 1024, else none)")
    p.add_argument("--force", action="store_true", help="replace RELEASE_DIR if it exists")
    p.set_defaults(handler=_protect)

    g = sub.add_parser("generate", help="generate text with a Taylor-protected release")
    g.add_argument("release_dir", metavar="RELEASE_DIR")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (tokenised with the release's tokenizer)")
    src.add_argument("--prompt-ids", help="prompt token ids, comma- or space-separated")
    g.add_argument("--max-new-tokens", type=int, default=32, metavar="K")
    g.add_argument("--stats", action="store_true",
                   help="also report, per block and in total, how often an expanded neuron's pre-activation "
                        "left the guard radius, where the series is not used (the activation is evaluated exactly)")
    g.set_defaults(handler=_generate)

    a = sub.add_parser("audit", help="measure how much of the MLP weights a release gives away")
    a.add_argument("release_dir", metavar="RELEASE_DIR")
    a.add_argument("--original", default=None, metavar="MODEL_DIR", help="original checkpoint to compare with")
    a.add_argument("--tol", type=float, default=1e-3, help="relative error counted as recovered (default 1e-3)")
    a.set_defaults(handler=_audit)


def _protect(args: argparse.Namespace) -> int:
    from taylor.conversion import DEFAULT_FRACTION, protect
    from taylor.release import MANIFEST
    from zkfp.files import read_json

    out = protect(args.model_dir, args.out, n_terms=args.terms, calibration=args.calibration,
                  fraction=DEFAULT_FRACTION if args.fraction is None else args.fraction, slowdown=args.slowdown,
                  force=args.force)
    manifest = read_json(out / MANIFEST, "release manifest")  # just written: no need to re-validate the shards
    throttle = manifest["throttle"]
    measured = "" if throttle is None else (f", measured slowdown {throttle['slowdown']:.2f}x for the target "
                                            f"{throttle['target']:g}x")
    if throttle is not None and throttle["slowdown"] < throttle["target"]:
        measured += f" (short of it: N = {manifest['n_terms']} is the most the format allows)"
    print(f"wrote Taylor release (N={manifest['n_terms']}, expanded fraction {manifest['expanded_fraction']:.2f}"
          f"{measured}) to {out}")
    return 0


def _parse_ids(text: str) -> list[int]:
    from zkfp.errors import ZkfpError

    parts = text.replace(",", " ").split()
    if not parts or not all(p.isdigit() for p in parts):
        raise ZkfpError(f"--prompt-ids must be non-negative integers separated by commas or spaces (got {text!r})")
    return [int(p) for p in parts]


def _generate(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    import torch

    from taylor.runtime import guard_counts, load_release
    from zkfp.errors import ZkfpError

    if args.max_new_tokens < 1:
        raise ZkfpError("--max-new-tokens must be ≥ 1")
    model = load_release(args.release_dir)
    tokenizer = None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.release_dir)
    except Exception:
        if args.prompt is not None:
            raise ZkfpError(f"{args.release_dir} carries no usable tokenizer; use --prompt-ids") from None
    if args.prompt is not None:
        ids = tokenizer(args.prompt)["input_ids"]
    else:
        ids = _parse_ids(args.prompt_ids)
    vocab = model.config.vocab_size
    if not ids:
        raise ZkfpError("the prompt is empty")
    if any(t >= vocab for t in ids):
        raise ZkfpError(f"prompt token id {max(ids)} is outside the vocabulary (size {vocab})")
    with torch.no_grad(), guard_counts(model) if args.stats else nullcontext() as counts:
        out = model.generate(torch.tensor([ids]), max_new_tokens=args.max_new_tokens, do_sample=False,
                             pad_token_id=model.generation_config.pad_token_id
                             if model.generation_config.pad_token_id is not None else 0)
    new = out[0, len(ids):].tolist()
    if tokenizer is not None:
        print(tokenizer.decode(new))
    else:
        print(" ".join(map(str, new)))
    if counts is not None:
        print("\n".join(_stats_lines(counts, model)))
    return 0


def _stats_lines(counts, model) -> list[str]:
    from taylor.runtime import GuardCounts, TaylorMLP

    mlp = next(m for m in model.modules() if isinstance(m, TaylorMLP))
    total = GuardCounts(sum(c.evaluations for c in counts), sum(c.fell_back for c in counts))
    lines = [f"guard fallbacks: (token, expanded neuron) evaluations whose |pre-activation - anchor| exceeded "
             f"the guard radius: the {mlp.n_terms}-term series is not used there, the activation is evaluated "
             f"exactly (orders ≤ {mlp.guard_order} plus the remainder)",
             f"{'block':>6} {'evaluations':>12} {'fell back':>10} {'fraction':>9}"]
    rows = [(str(i), c) for i, c in enumerate(counts)] + [("total", total)]
    lines += [f"{name:>6} {c.evaluations:>12} {c.fell_back:>10} {100 * c.fraction:8.3f}%" for name, c in rows]
    return lines


def _audit(args: argparse.Namespace) -> int:
    from taylor.audit import audit

    report = audit(args.release_dir, original=args.original, tol=args.tol)
    print("\n".join(report.lines()))
    return 0
