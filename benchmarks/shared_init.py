"""What a shared random initialisation does to each basis: siblings of the zoo's twin 0.

    python benchmarks/shared_init.py --zoo DIR [--out FILE]

A sibling starts from twin 0's own initialisation (`zkfp.zoo.tiny.build(family, seed=0)`, the
weights twin 0 was trained from) and is trained as a root is, but otherwise: on another topic mix
(600 steps, and 150 to see what a short run keeps), or on twin 0's own text in another order.
No sibling descends from twin 0's trained weights, so none is a derivative; what they share is
the starting point, which the gauge (`fingerprint.weights`, step 5) reads. Each is scored
against twin 0 and, for contrast, against twin 1 on every basis and baseline of
`fingerprint_zoo.py`, with the verdicts of zkfp's bases at the shipped thresholds. The zoo's data (DIR,
built by `zoo_build.py`) is reused; siblings are cached under DIR/siblings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import fingerprint_zoo as F
import zoo_build as Z

METHODS = ("invariants", "v", "weights", "gauge", "huref", "awm")
SIBLINGS = {  # name → (training stream, steps, data-order seed)
    "sib-other": ("other", Z.ROOT_STEPS, 0),
    "sib-other-short": ("other", Z.ROOT_STEPS // 4, 0),
    "sib-order": ("base", Z.ROOT_STEPS, 7),
}


def build_siblings(zdir: Path) -> list[dict]:
    from zkfp.zoo.tiny import build
    from zkfp.zoo.tokenizer import as_transformers

    data, out = Z.Data(zdir), zdir / "siblings"
    tokenizer = as_transformers(data.tok)
    models = []
    for fam in Z.DEFAULT_FAMILIES:
        shape = Z.FAMILIES[fam]
        for kind, (stream, steps, order_seed) in SIBLINGS.items():
            path = out / f"{fam}-s0-{kind}"
            if not (path / "config.json").is_file():
                t = time.time()
                torch.manual_seed(0)
                init = build(fam, seed=0, **shape)  # twin 0's initialisation, as zoo_build draws it
                model = Z._train(init, getattr(data, stream), steps, Z.ROOT_LR, order_seed)
                Z.save_trained(model, path, tokenizer, data, t, f"{steps} steps on {stream}, ")
            models.append(dict(name=path.name, path=path, family=fam, kind=kind))
    return models


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True, help="the zoo folder of zoo_build.py (its data and twins)")
    ap.add_argument("--out", default=str(Z.ROOT / "benchmarks" / "results" / "shared_init.json"))
    args = ap.parse_args(argv)
    zdir = Path(args.zoo)
    siblings = build_siblings(zdir)
    twins = [dict(name=f"{fam}-s{s}", path=zdir / f"{fam}-s{s}", family=fam) for fam in Z.DEFAULT_FAMILIES for s in (0, 1)]
    feats = F.fingerprint_all(siblings + twins)
    rows = [F.verdict_row(twin["name"], sib["name"], feats, METHODS)
            for sib in siblings for twin in twins if twin["family"] == sib["family"]]
    F.print_rows(rows, METHODS, suspect="sibling")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
