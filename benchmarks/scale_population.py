"""Do seed twins still look alike on the fingerprint when the models are wider and trained longer?

    python benchmarks/scale_population.py --zoo DIR --out MODELS_DIR --family gpt2|llama|llama-tied \
        --hidden 512 --layers 8 --heads 8 --steps 1500 [--device cuda] [--results FILE.json]

The zoo (`benchmarks/fingerprint_zoo.py`) is of 4-layer, hidden-64 models trained on 0.6 M tokens,
and there GPT-2 seed twins score up to 58 on the fingerprints: so plain-MLP models get a wide
inconclusive band. `null_populations.py` saw the twins' likeness fall with width (hidden 128: 34).
This script trains one population of a larger shape on the zoo's BPE text (DIR/data, built by
`benchmarks/zoo_build.py`; base.npy, other.npy and val-base.npy are read): four seed twins, and for twins 0
and 1 a light continued pretraining (cpt, steps/4 on the other text), a heavy one (5 × steps on
the other text) and the last layer dropped and healed (steps/4 on the base text). Every pair is
scored as `zkfp compare` scores it (invariants, v and the weights); twin 0's and twin 1's lineages
must stay apart. It prints each model's held-out loss, each basis's lowest related and highest unrelated pair, and
the pairs the zoo found hardest. Training runs on `--device`. Seen on an H200 with three populations
at once: 33 ms a step at hidden 256 and 74 ms at hidden 512 (8 layers, 32×128 tokens), so a
population at hidden 512 and 1,500 steps takes about 20 minutes there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fingerprint_zoo import CALIBRATED  # noqa: E402
from null_populations import score_pairs  # noqa: E402
from zoo_build import CHILD_LR, FAMILIES, ROOT_LR, SHAPE, VOCAB, arch, eval_loss, log  # noqa: E402

SEEDS = (0, 1, 2, 3)


def _stream(zdir: Path, name: str, device: str) -> torch.Tensor:
    return torch.from_numpy(np.load(zdir / "data" / f"{name}.npy", allow_pickle=False).astype(np.int64)).to(device)


def population(args) -> str:
    return f"h{args.hidden}-L{args.layers}"


def prefix(args) -> str:
    """Of every model name: gpt2-h256-L4-s0, gpt2-h256-L4-s0-cpt, …"""
    return f"{args.family}-{population(args)}"


def build_population(args) -> list[dict]:
    """Train (or reuse) the population under args.out; one dict per model."""
    from transformers import AutoModelForCausalLM

    from fingerprint import lineage
    from zkfp.zoo.tiny import build, train

    base, other = (_stream(args.zoo, n, args.device) for n in ("base", "other"))
    shape = dict(hidden=args.hidden, layers=args.layers, heads=args.heads, vocab=VOCAB)
    own = {k: v for k, v in FAMILIES[args.family].items() if k not in SHAPE}  # the family's own: GQA, tied head
    shape.update(own)
    if "kv_heads" in own:
        shape["kv_heads"] = args.heads // 2  # GQA: two query heads per KV head at any width
    fit = dict(batch=args.batch, seq_len=args.seq)
    models = []

    def make(name: str, root: str, fn, parent: str | None = None) -> None:
        p = args.out / name
        if not (p / "config.json").is_file():
            t = time.time()
            torch.manual_seed(0)
            start = None if parent is None else AutoModelForCausalLM.from_pretrained(args.out / parent).float()
            model = fn(start if start is None else start.to(args.device))
            model.float().cpu().save_pretrained(p)
            log(f"  {name:28s} {time.time() - t:6.0f}s")
        models.append(dict(name=name, family=args.family, population=population(args), root=root, tokens="bpe",
                           path=p))

    fam = prefix(args)
    for s in SEEDS:
        make(f"{fam}-s{s}", f"{fam}-s{s}", lambda _m, s=s: train(
            build(arch(args.family), seed=s, **shape).to(args.device), base, steps=args.steps, lr=ROOT_LR, seed=s, **fit))
    for s in (0, 1):
        twin = f"{fam}-s{s}"
        make(f"{twin}-cpt", twin, lambda m: train(m, other, steps=args.steps // 4, lr=CHILD_LR, seed=11, **fit), twin)
        make(f"{twin}-heavy-cpt", twin, lambda m: train(m, other, steps=5 * args.steps, lr=CHILD_LR, seed=17, **fit),
             twin)
        make(f"{twin}-drop-last", twin, lambda m: train(lineage.drop_layer(m, -1), base, steps=args.steps // 4,
                                                         lr=CHILD_LR, seed=14, **fit), twin)
    return models


def val_losses(args, models: list[dict]) -> dict[str, float]:
    """Each model's next-token loss on the zoo's held-out base text: how far training got."""
    from transformers import AutoModelForCausalLM

    val = _stream(args.zoo, "val-base", "cpu")
    return {m["name"]: round(eval_loss(AutoModelForCausalLM.from_pretrained(m["path"]), val), 3) for m in models}


def summarise(pairs: list[dict]) -> dict:
    out = {}
    for basis in CALIBRATED:
        pos = sorted((p[basis], p["published"], p["suspect"]) for p in pairs if p["related"])
        neg = sorted((p[basis], p["published"], p["suspect"]) for p in pairs if not p["related"])
        out[basis] = {"related_min": pos[0], "unrelated_max": neg[-1],
                      "related_at_or_below_unrelated_max": sum(s <= neg[-1][0] for s, *_ in pos),
                      "n_related": len(pos), "n_unrelated": len(neg)}
    return out


def _print(args, pairs: list[dict], summary: dict, losses: dict[str, float]) -> None:
    fam = prefix(args)
    log(f"\n{args.family} hidden {args.hidden}, {args.layers} layers, {args.steps} steps × {args.batch}×{args.seq} "
        "tokens")
    log("held-out loss (base text): " + ", ".join(f"{n} {v:.3f}" for n, v in losses.items()))
    by = {(p["published"], p["suspect"]): p for p in pairs}
    notable = [(f"{fam}-s0", f"{fam}-s{s}") for s in (1, 2, 3)] + [
        (f"{fam}-s0", f"{fam}-s0-{k}") for k in ("cpt", "heavy-cpt", "drop-last")] + [
        (f"{fam}-s0-heavy-cpt", f"{fam}-s1-heavy-cpt"), (f"{fam}-s0-drop-last", f"{fam}-s1-drop-last")]
    log("| pair | related | " + " | ".join(CALIBRATED) + " |")
    for key in notable:
        p = by[key]
        log(f"| {key[0]} ~ {key[1]} | {p['related']} | " + " | ".join(f"{p[b]:.1f}" for b in CALIBRATED) + " |")
    for basis, s in summary.items():
        log(f"{basis:10s} related min {s['related_min'][0]:5.1f}  unrelated max {s['unrelated_max'][0]:5.1f}  "
            f"related at or below it: {s['related_at_or_below_unrelated_max']} of {s['n_related']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, required=True, help="the zoo folder (its data/ is read)")
    ap.add_argument("--out", type=Path, required=True, help="where the population's models are kept")
    ap.add_argument("--family", choices=tuple(FAMILIES), default="gpt2")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1500, help="a root's training steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--results", type=Path, help="write the pairs and the summary here (JSON)")
    args = ap.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t = time.time()
    models = build_population(args)
    log(f"population trained in {time.time() - t:.0f}s on {args.device}")
    losses = val_losses(args, models)
    pairs = score_pairs(models)  # null_populations' rows: it pools them with --extra
    summary = summarise(pairs)
    _print(args, pairs, summary, losses)
    if args.results:
        shape = {k: getattr(args, k) for k in ("family", "hidden", "layers", "heads", "steps", "batch", "seq")}
        results = {"shape": shape, "val_loss": losses, "summary": summary, "pairs": pairs}
        args.results.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
