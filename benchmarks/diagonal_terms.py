"""How much of the fingerprint's likeness between unrelated models sat on the terms' diagonals.

    python benchmarks/diagonal_terms.py --zoo DIR [--models DIR ...] [--m 64 128 256] [--draws 3] [--out RESULTS.json]

Each invariant term is a k×k matrix over the selected tokens (M_a = X̂W_qᵀW_kX̂ᵀ, …). Its k
diagonal entries are a token's response to itself, x_iᵀAx_i. Where they stand out from the
off-diagonal entries, they do so in every model whatever its seed, and once the term is z-scored
they are a pattern that unrelated models share; spec `zkfp-fp/3` reads only the off-diagonal
entries for that reason, and this measures the difference. First printed: the share of each
term's squared norm (z-scored whole) on its diagonal, per population of seed twins (1/k
expected). Then every pair of one family on one token list is scored (the zoo of
`benchmarks/fingerprint_zoo.py`, the populations of `benchmarks/null_populations.py` under
DIR/populations, and any folder of models given with --models, e.g. those of
`benchmarks/scale_population.py`), layers aligned as `zkfp compare` aligns them, on:

- `with diagonals` and `v, with diagonals`: each term z-scored over its k² entries, and
  v_l = zscore(P·z_l) with `zkfp-fp/2`'s P (`fingerprint.encoder.projection_matrix` at 3k²
  columns): the statistic of `zkfp-fp/2`;
- `invariants` and `v`: the spec's (each term's k(k−1) off-diagonal entries, z-scored among
  themselves; P at 3k(k−1) columns); with `--m` / `--draws`, v also at other lengths m and from
  other seeds; and `v (fp/2's P restricted)`, through `zkfp-fp/2`'s P's off-diagonal columns:
  how much the draw of a 64-number projection moves the scores.

Two models are related when their names share a root (`…-s<seed>`, the zoo's naming). Prints,
per family and statistic: AUC, the lowest related and highest unrelated pair (and the highest on
the zoo's trained BPE vocabulary alone), heavy continued pretraining's lowest related score, and
`fingerprint_zoo.rule`'s thresholds on the pool.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fingerprint import compare as C  # noqa: E402
from fingerprint import spec  # noqa: E402
from fingerprint_zoo import auc, rule  # noqa: E402

TOY_VOCAB = 512  # the demo's byte-level vocabulary (null_populations' "toy" population)


def models_in(folders: list[Path]) -> list[Path]:
    return [p for f in folders if f.is_dir() for p in sorted(f.iterdir())
            if (p / "config.json").is_file() and re.match(r"^(llama|gpt2)-.*-?s\d+", p.name)]


def root(name: str) -> str:
    return re.match(r"^(.*?-s\d+)", name).group(1)


def tokens_of(name: str) -> str:
    return "toy" if "-toy-" in name else "bpe"


def diagonal_shares(whole: dict[str, np.ndarray], k: int) -> dict[str, list[float]]:
    """Per population (the seed twins `<population>-s<seed>`): the mean share of each whole
    z-scored term's squared norm on its diagonal (M_a, M_b, M_f)."""
    diagonal = np.eye(k, dtype=bool).reshape(-1)
    groups: dict[str, list[np.ndarray]] = {}
    for name, z in whole.items():
        m = re.match(r"^(.*)-s\d+$", name)
        if m:
            terms = z.reshape(z.shape[0], 3, k * k)
            groups.setdefault(m.group(1), []).append((terms[:, :, diagonal] ** 2).sum(-1) / (terms ** 2).sum(-1))
    return {g: np.concatenate(v).mean(axis=0).round(3).tolist() for g, v in sorted(groups.items())}


def projected(z: np.ndarray, P) -> np.ndarray:
    """The spec's encoder (fingerprint.encoder.project) with projection P, on (L, n) numpy rows."""
    import torch

    from fingerprint.encoder import project

    return project(torch.from_numpy(z), P).numpy()


def projections(k: int, ms: list[int], draws: int) -> dict[str, object]:
    """Projections (float64 torch) of `zkfp-fp/2` (3k² columns; key "fp/2") and extra ones of the
    spec's invariants: the spec's seeded P at other m and seeds (seed + i), and fp/2's P restricted
    to the off-diagonal columns."""
    from fingerprint.encoder import projection_matrix

    n = spec.layer_length(k)
    fp2 = projection_matrix(n=3 * k * k).double()
    out = {f", m = {m}, draw {i}": projection_matrix(n=n, m=m, seed=spec.ENCODER_SEED + i).double()
           for m in ms for i in range(draws) if (m, i) != (spec.M_DIM, 0)}  # that one is the spec's v
    out[" (fp/2's P restricted)"] = fp2.reshape(spec.M_DIM, 3, k * k)[:, :, spec.off_diagonal(k)].reshape(spec.M_DIM, n)
    return {"fp/2": fp2, **out}


def statistics(fp, terms, projections_: dict[str, object]) -> dict[str, np.ndarray]:
    from fingerprint.invariants import zscored_terms

    whole = zscored_terms(terms).double().numpy().reshape(len(terms), -1)
    invariants = fp.layer_invariants()
    extra = {label: P for label, P in projections_.items() if label != "fp/2"}
    return {"with diagonals": whole, "v, with diagonals": projected(whole, projections_["fp/2"]),
            "invariants": invariants, "v": fp.layer_v(),
            **{f"v{label}": projected(invariants, P) for label, P in extra.items()}}


def summary(scores: list[tuple[float, str, str, bool]]) -> dict:
    rel = sorted((s, a, b) for s, a, b, r in scores if r)
    unr = sorted(((s, a, b) for s, a, b, r in scores if not r), reverse=True)
    rs, us = np.array([r[0] for r in rel]), np.array([u[0] for u in unr])
    bpe = [u for u in unr if tokens_of(u[1]) == "bpe"]
    heavy = [r[0] for r in rel if "heavy" in r[1] + r[2]]
    mu, sd = float(us.mean()), float(us.std())
    return {"related": len(rel), "unrelated": len(unr), "auc": auc(rs, us),
            "related_min": [round(rel[0][0], 1), rel[0][1], rel[0][2]],
            "unrelated_max": [round(unr[0][0], 1), unr[0][1], unr[0][2]],
            "unrelated_max_bpe": [round(bpe[0][0], 1), bpe[0][1], bpe[0][2]],
            "unrelated_mean_sd": [round(mu, 1), round(sd, 1)],
            "related_at_or_below_unrelated_max": int((rs <= us.max()).sum()),
            "heavy_cpt_min": round(min(heavy), 1) if heavy else None,
            "rule": rule(float(rs.min()), float(us.max()), mu, sd, "invariants")}  # a fingerprint basis: no floor


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True, type=Path, help="the zoo folder (benchmarks/zoo_build.py; "
                    "its populations/ folder from benchmarks/null_populations.py is read too)")
    ap.add_argument("--models", action="append", default=[], type=Path, metavar="DIR",
                    help="another folder of models named <family>-…-s<seed>[-derivation]")
    ap.add_argument("--m", nargs="+", type=int, default=[spec.M_DIM], help="v's length per layer (the spec's: 64)")
    ap.add_argument("--draws", type=int, default=1, help="projections drawn per m (seed, seed + 1, …)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from fingerprint import extract as E

    t = time.time()
    paths = models_in([args.zoo, args.zoo / "populations", *args.models])
    ids = {"bpe": spec.select_tokens(4096), "toy": spec.select_tokens(TOY_VOCAB)}
    extra = projections(spec.K_TOKENS, args.m, args.draws)
    feats = {}
    for p in paths:
        fp, terms = E.extract(p, token_ids=ids[tokens_of(p.name)], with_terms=True)
        feats[p.name] = statistics(fp, terms, extra)
    print(f"{len(paths)} models fingerprinted in {time.time() - t:.0f} s")
    shares = diagonal_shares({n: f["with diagonals"] for n, f in feats.items()}, spec.K_TOKENS)
    print(f"share of each term's squared norm on its diagonal (M_a, M_b, M_f; 1/k = {1 / spec.K_TOKENS:.3f}):")
    for group, share in shares.items():
        print(f"  {group:16s} {share}")
    results = {"diagonal_shares": shares}
    for family in ("llama", "gpt2"):
        names = [p.name for p in paths if p.name.startswith(family + "-")]
        pairs = [(a, b) for a, b in itertools.combinations(names, 2) if tokens_of(a) == tokens_of(b)]
        for stat in feats[names[0]]:
            scores = [(float(C.aligned_scores(C.layer_similarities(feats[a][stat], feats[b][stat])[None])[0]),
                       a, b, root(a) == root(b)) for a, b in pairs]
            r = results[f"{family}/{stat}"] = summary(scores)
            print(f"{family:5s} {stat:42s} AUC {r['auc']:.4f}  related min {r['related_min'][0]:5.1f}  "
                  f"unrelated max {r['unrelated_max'][0]:5.1f} (BPE {r['unrelated_max_bpe'][0]:5.1f}, "
                  f"mean {r['unrelated_mean_sd'][0]} ± {r['unrelated_mean_sd'][1]})  related ≤ that max: "
                  f"{r['related_at_or_below_unrelated_max']}  heavy-cpt min {r['heavy_cpt_min']}  "
                  f"rule {r['rule']['related']:.0f} / {r['rule']['unrelated']:.0f}")
            print(f"      highest unrelated: {r['unrelated_max'][1]} vs {r['unrelated_max'][2]}; "
                  f"lowest related: {r['related_min'][1]} vs {r['related_min'][2]}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
