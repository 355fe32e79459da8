"""What the planned proven per-head fingerprint (zkfp-fp/4, docs/fp4-plan.md) would separate.

    python benchmarks/fp4_separation.py --zoo DIR [--families llama gpt2 llama-tied] [--populations]
        [--scale MODELS_DIR ...] [--m-head 64 256] [--out RESULTS.json]

fp/4's v holds, per layer, one vector per attention head — zscore(P_head · the head's 480
z-scored off-diagonal numbers, `fingerprint.heads`) — and one for the MLP — zscore(P_mlp · its
240). What a proof can publish is these projections, not the heads themselves, so this scores
the projected units on the zoo (`benchmarks/zoo_build.py`) and, with `--populations`, the
populations of `benchmarks/null_populations.py` (trained on first use, 26 min) and, with `--scale`,
the populations `benchmarks/scale_population.py --out MODELS_DIR` trained (hidden 256), beside
today's local `heads` basis and today's proven v:

- `heads`: today's per-head vectors as `zkfp compare` scores them (unprojected, not proven);
- `units-m{M}`: the projected heads (M numbers a head), centred and matched as `heads` are
  (`fingerprint.heads`: each model's mean direction removed, heads matched per layer pair,
  layers aligned) — the comparison fp/4 would make on a bare bundle;
- `units+mlp-m{M}`: the same with the MLP unit as one more unit of each layer, matched only to
  the other model's MLP unit (a layer scores the sum of both ÷ √((H_a+1)(H_b+1)));
- `summary-m{M}`: per layer zscore(P_s · [the mean of its head units, its MLP unit]), 64 numbers, compared
  as v is: a compact rule anyone can apply to a proven fp/4 v, for identify to rank a large
  registry on before rescoring its best entries on the units (plan, R8); `summary-c-m{M}` the
  same of the centred heads;
- `v`: today's proven v (zkfp-fp/3), for reference.

Per family: AUC, the lowest related and highest unrelated pair and their gap, and the verdicts
at the thresholds `fingerprint_zoo.rule` gives on this run's pool (zoo pairs, and with
`--populations` every pair of the family on one token list pooled: the shipped thresholds come
from such a pool). P_head and P_mlp are seeded Gaussian matrices drawn here (numpy), one for
every head and one for every MLP, as the plan's D1 says.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fingerprint import compare as C  # noqa: E402
from fingerprint import heads as Hd  # noqa: E402
from fingerprint import spec  # noqa: E402
from fingerprint_zoo import auc, rule  # noqa: E402
from zoo_build import DEFAULT_FAMILIES, FAMILIES, VOCAB, build_zoo, log  # noqa: E402

SEED = 20261208  # P_head, P_mlp: drawn for this benchmark, not the spec's


def projections(m_head: int, m_mlp: int = spec.M_DIM, k: int = spec.K_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    n = len(spec.off_diagonal(k))
    g = np.random.default_rng(SEED + m_head)
    return g.standard_normal((m_head, 2 * n)) / math.sqrt(2 * n), g.standard_normal((m_mlp, n)) / math.sqrt(n)


def zscore_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True))


def units(fp, P_head: np.ndarray, P_mlp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp/4's v of one fingerprint: (L, H, m_head) head units and (L, m_mlp) MLP units."""
    n = P_mlp.shape[1]
    mlp = fp.layer_invariants().reshape(fp.layers, 3, n)[:, 2]  # spec.TERMS: qk, vo, mlp
    return zscore_rows(fp.layer_heads() @ P_head.T), zscore_rows(mlp @ P_mlp.T)


@functools.lru_cache(maxsize=None)
def summary_projection(m: int, n: int) -> np.ndarray:
    """P_s (m × n), one seeded draw for every model."""
    return np.random.default_rng(SEED - 1).standard_normal((m, n)) / math.sqrt(n)


def summary(u: tuple[np.ndarray, np.ndarray], m: int = spec.M_DIM) -> np.ndarray:
    """(L, m): each layer's mean head unit and its MLP unit, projected by one seeded P_s and z-scored."""
    heads, mlp = u
    x = np.concatenate([heads.mean(axis=1), mlp], axis=1)
    return zscore_rows(x @ summary_projection(m, x.shape[1]).T)


def summary_centred(u: tuple[np.ndarray, np.ndarray], m: int = spec.M_DIM) -> np.ndarray:
    """`summary` of the heads once centred (each layer's mean head less the model's): what a layer's
    heads share beyond what all the model's heads share."""
    return summary((Hd.centred(u[0], terms=1), u[1]), m)


def unit_similarities(a, b, with_mlp: bool) -> np.ndarray:
    (ha, ma), (hb, mb) = a, b
    S = Hd.matched_similarities(Hd.centred(ha, terms=1), Hd.centred(hb, terms=1))
    if not with_mlp:
        return S
    Ha, Hb = ha.shape[1], hb.shape[1]
    mlp_cos = 100.0 * (ma / np.linalg.norm(ma, axis=-1, keepdims=True)) @ (mb / np.linalg.norm(mb, axis=-1, keepdims=True)).T
    return (S * math.sqrt(Ha * Hb) + mlp_cos) / math.sqrt((Ha + 1) * (Hb + 1))


SUMMARIES = (("summary", summary), ("summary-c", summary_centred))


def scale_models(out: Path) -> list[dict]:
    """The models of one scale_population.py population, named `{family}-h{H}-L{L}-s{seed}[-child]`."""
    models = []
    for p in sorted(x for x in out.iterdir() if (x / "config.json").is_file()):
        family = max((f for f in FAMILIES if p.name.startswith(f + "-")), key=len)
        population, root = re.match(rf"{re.escape(family)}-(h\d+-L\d+)", p.name), re.match(r".*-s\d+", p.name)
        models.append(dict(name=p.name, family=family, population=population.group(1), root=root.group(0),
                           tokens="bpe", path=p))
    return models


def score_pairs(models: list[dict], m_heads: list[int]) -> tuple[list[dict], list[str]]:
    from fingerprint.extract import extract

    ids = {"bpe": spec.select_tokens(VOCAB), "toy": spec.select_tokens(512)}
    feats, t = {}, time.time()
    for m in models:
        fp = extract(m["path"], token_ids=ids[m.get("tokens", "bpe")])
        feats[m["name"]] = f = {"fp": fp, **{M: units(fp, *projections(M)) for M in m_heads}}
        f.update({(name, M): rule_(f[M]) for M in m_heads for name, rule_ in SUMMARIES})
    log(f"fingerprinted {len(models)} models in {time.time() - t:.0f} s")
    bases = ["heads", "v"] + [f"{b}-m{M}" for M in m_heads for b in ("units", "units+mlp", "summary", "summary-c")]
    pairs = []
    for a, b in itertools.combinations(models, 2):
        if a["family"] != b["family"] or a.get("tokens", "bpe") != b.get("tokens", "bpe"):
            continue
        fa, fb = feats[a["name"]], feats[b["name"]]
        row = {"published": a["name"], "suspect": b["name"], "family": a["family"], "related": a["root"] == b["root"],
               "zoo": a.get("population") is None and b.get("population") is None}
        for basis in ("heads", "v"):
            row[basis] = float(C.aligned_scores(C.basis_similarities(fa["fp"], fb["fp"], basis)[None])[0])
        for M in m_heads:
            for with_mlp in (False, True):
                S = unit_similarities(fa[M], fb[M], with_mlp)
                row[f"units{'+mlp' if with_mlp else ''}-m{M}"] = float(C.aligned_scores(S[None])[0])
            for name, _ in SUMMARIES:
                S = C.layer_similarities(fa[name, M][None], fb[name, M])
                row[f"{name}-m{M}"] = float(C.aligned_scores(S)[0])
        pairs.append(row)
    return pairs, bases


def summarise(pairs: list[dict], bases: list[str], fam: str, zoo_only: bool) -> dict:
    sel = [p for p in pairs if p["family"] == fam and (p["zoo"] or not zoo_only)]
    out = {}
    for basis in bases:
        pos = [p[basis] for p in sel if p["related"]]
        neg = [p[basis] for p in sel if not p["related"]]
        t = rule(min(pos), max(neg), float(np.mean(neg)), float(np.std(neg)), basis)
        verdicts = {side: {v: sum(C.verdicts(p[basis], t)[0] == v for p in sel if p["related"] == rel)
                           for v in ("same-lineage", "inconclusive", "unrelated")}
                    for side, rel in (("related", True), ("unrelated", False))}
        out[basis] = {"auc": auc(pos, neg), "related_min": min(pos), "unrelated_max": max(neg),
                      "gap": min(pos) - max(neg), "null": [float(np.mean(neg)), float(np.std(neg))],
                      "thresholds": [t["related"], t["unrelated"]], "verdicts": verdicts,
                      "n": [len(pos), len(neg)]}
    return out


def parent_ranks(pairs: list[dict], basis: str, fam: str) -> list[int]:
    """Identify on a registry of the family's roots (models named …-s<seed>): for every derivative,
    the rank (1 = best) of its own root among all the roots it is scored against on `basis` — how
    many entries identify must rescore for the parent to be among them (scores taken as symmetric)."""
    is_root = lambda name: re.search(r"-s\d+$", name) is not None  # noqa: E731
    scores: dict[str, list[tuple[float, bool]]] = {}
    for p in pairs:
        if p["family"] != fam:
            continue
        for me, other in ((p["published"], p["suspect"]), (p["suspect"], p["published"])):
            if is_root(other) and not is_root(me):
                scores.setdefault(me, []).append((p[basis], p["related"]))
    ranks = []
    for row in scores.values():
        order = sorted(row, key=lambda x: -x[0])
        ranks.append(1 + next(i for i, (_, rel) in enumerate(order) if rel))
    return ranks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True, help="the zoo folder (benchmarks/zoo_build.py; built if missing)")
    ap.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), choices=sorted(FAMILIES))
    ap.add_argument("--populations", action="store_true", help="add null_populations.py's populations")
    ap.add_argument("--scale", nargs="*", default=[], metavar="MODELS_DIR", help="scale_population.py --out folders")
    ap.add_argument("--m-head", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--out", help="write every pair's scores and the summaries here (JSON)")
    args = ap.parse_args(argv)
    zdir = Path(args.zoo)
    models = build_zoo(zdir, tuple(args.families))
    if args.populations:
        from null_populations import build_populations

        names = {m["name"] for m in models}
        models += [m for m in build_populations(zdir, tuple(args.families)) if m["name"] not in names]
    for out in args.scale:
        models += [m for m in scale_models(Path(out)) if m["family"] in args.families]
    pairs, bases = score_pairs(models, args.m_head)
    summary = {}
    for fam in args.families:
        for pool in ("zoo",) + (("pool",) if args.populations or args.scale else ()):
            s = summary[f"{fam}/{pool}"] = summarise(pairs, bases, fam, zoo_only=pool == "zoo")
            log(f"\n{fam}, {'zoo pairs' if pool == 'zoo' else 'zoo and populations pooled'}; thresholds by "
                f"fingerprint_zoo.rule on these pairs")
            log("| basis | AUC | related min | unrelated max | gap | null | related / unrelated at | "
                "verdicts: related (same/inc/unrel) | unrelated |")
            log("|---|---|---|---|---|---|---|---|---|")
            for basis, r in s.items():
                vr, vu = ("/".join(str(r["verdicts"][side][v]) for v in ("same-lineage", "inconclusive", "unrelated"))
                          for side in ("related", "unrelated"))
                log(f"| {basis} | {r['auc']:.4f} | {r['related_min']:.1f} | {r['unrelated_max']:.1f} | {r['gap']:.1f} | "
                    f"{r['null'][0]:.1f} ± {r['null'][1]:.1f} | {r['thresholds'][0]:.0f} / {r['thresholds'][1]:.0f} | "
                    f"{vr} | {vu} |")
    log("\nidentify on a registry of each family's roots: the rank of each derivative's own root (identify "
        "rescores the best 16 on the units): the worst rank, and how many derivatives rank it below 1st / 4th / 16th")
    for fam in args.families:
        for basis in bases:
            r = np.array(parent_ranks(pairs, basis, fam))
            log(f"  {fam:10s} {basis:18s} max {r.max():3d}; > 1: {(r > 1).sum():3d}, > 4: {(r > 4).sum():3d}, "
                f"> 16: {(r > 16).sum():3d} of {len(r)}")
    if args.out:
        Path(args.out).write_text(json.dumps({"m_head": args.m_head, "summary": summary, "pairs": pairs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
