"""What tying the output head to the embedding does to the fingerprints' null: seed twins of each
family trained with the other choice than the zoo's (Llama tied, GPT-2 untied).

    python benchmarks/tied_heads.py --zoo DIR [--out FILE]

The zoo (`zoo_build.py`) trains Llama with an output head of its own and GPT-2 with its head
tied, as transformers configures each by default, so there the MLP kind and the tying go
together. Here three more twins per family start from the zoo's seeds and recipe (the same
text, steps and learning rate as its roots) with the tying flipped, and every pair within a
family is scored on zkfp's bases and HuRef's formula against each other and against the zoo's
roots s0-s2, with the verdicts at the shipped thresholds (`zkfp compare`'s choice of them).
Models are cached under DIR/tied-heads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

import fingerprint_zoo as F
import zoo_build as Z

SEEDS = (0, 1, 2)
METHODS = ("invariants", "v", "weights", "gauge", "huref")


def flipped_twins(zdir: Path) -> list[dict]:
    from zkfp.zoo.tiny import build
    from zkfp.zoo.tokenizer import as_transformers

    data, out = Z.Data(zdir), zdir / "tied-heads"
    tokenizer = as_transformers(data.tok)
    models = []
    for fam in Z.DEFAULT_FAMILIES:
        tie = fam != "gpt2"  # the other choice than the zoo's
        for seed in SEEDS:
            path = out / f"{fam}-{'tied' if tie else 'untied'}-s{seed}"
            if not (path / "config.json").is_file():
                t = time.time()
                model = build(fam, seed=seed, **Z.FAMILIES[fam])
                head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
                # one Parameter for both, or a copy of the (seeded) embedding's initial values
                head.weight = embedding.weight if tie else torch.nn.Parameter(embedding.weight.detach().clone())
                model.config.tie_word_embeddings = tie
                Z.save_trained(Z._train(model, data.base, Z.ROOT_STEPS, Z.ROOT_LR, seed), path, tokenizer, data, t)
            models.append(dict(name=path.name, path=path, family=fam))
    return models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True, help="the zoo folder of zoo_build.py (its data and roots)")
    ap.add_argument("--out", default=str(Z.ROOT / "benchmarks" / "results" / "tied_heads.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    zdir = Path(args.zoo)
    models = flipped_twins(zdir) + [dict(name=f"{fam}-s{s}", path=zdir / f"{fam}-s{s}", family=fam)
                                    for fam in Z.DEFAULT_FAMILIES for s in SEEDS]
    feats = F.fingerprint_all(models)
    rows = [dict(F.verdict_row(a["name"], b["name"], feats, METHODS), family=a["family"],
                 tied=[feats[m["name"]]["fp"].model["tied_embeddings"] for m in (a, b)])
            for a, b in itertools.combinations(models, 2) if a["family"] == b["family"]]
    F.print_rows(rows, METHODS)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
