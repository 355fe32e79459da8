"""How far the unrelated pairs' scores move with the population: depth, width, vocabulary.

    python benchmarks/null_populations.py --zoo DIR [--out benchmarks/results/null_populations.json] [--families gpt2] [--shapes L2 toy]

The thresholds in `fingerprint.compare` come from one zoo (`benchmarks/fingerprint_zoo.py`:
4-layer, hidden-64 models on a trained 4,096-token BPE). Here, per family, more populations of
four seed twins each, trained on the same text within a population:

- on the zoo's BPE text (DIR/data, built by `benchmarks/zoo_build.py`): 2 and 8 layers at hidden
  64, and 4 layers at hidden 128;
- on the toy byte-level vocabulary of 512 ids that `zkfp demo` uses (its embedded model's shape,
  2 layers, its training text and steps), where the selected rows are barely trained;

plus one continued-pretraining child of each population's twin 0 (a related pair). Every pair of
one family on one token list is scored as `zkfp compare` scores it — also across populations
(a 2-layer model against an 8-layer one) — on the invariants and v, and on the weights where the
hidden sizes agree. The unrelated pairs are pooled with the zoo's (its results file) and the
zoo's calibration rule (`fingerprint_zoo.rule`) is applied to the pool, per MLP kind and basis.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fingerprint import compare as C  # noqa: E402
from fingerprint import spec  # noqa: E402
from fingerprint_zoo import CALIBRATED, rule, score  # noqa: E402
from zoo_build import (CHILD_LR, CHILD_STEPS, DEFAULT_FAMILIES, FAMILIES, KIND, ROOT_LR, ROOT_SEEDS,  # noqa: E402
                       ROOT_STEPS, SHAPE, VOCAB, Data, _train, arch, log)

BPE_SHAPES = {"L2": dict(hidden=64, layers=2, heads=4), "L8": dict(hidden=64, layers=8, heads=4),
              "h128": dict(hidden=128, layers=4, heads=4)}
SHAPES = (*BPE_SHAPES, "toy")  # every population this script can train


def _save(model, path: Path, tokenizer=None) -> Path:
    model.float().save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def build_populations(zdir: Path, families: tuple[str, ...] = DEFAULT_FAMILIES,
                      shapes: tuple[str, ...] = SHAPES) -> list[dict]:
    """Train (or reuse) the populations under zdir/populations; one dict per model."""
    from transformers import AutoModelForCausalLM

    from zkfp.zoo import corpus, embedded, tiny
    from zkfp.zoo.tokenizer import as_transformers

    data = Data(zdir)
    hf_tok = as_transformers(data.tok)
    pdir = zdir / "populations"
    models = []

    def make(name: str, fam: str, pop: str, root: str, tokens: str, fn) -> None:
        p = pdir / name
        if not (p / "config.json").is_file():
            t = time.time()
            torch.manual_seed(0)
            _save(fn(), p, hf_tok if tokens == "bpe" else None)
            log(f"  {name:22s} {time.time() - t:.0f}s")
        models.append(dict(name=name, family=fam, population=pop, root=root, tokens=tokens, path=p))

    toy_text = tiny.encode(corpus.generate(embedded.DOMAINS, 3000, seed=12))  # the demo's twin's text
    harbour = tiny.encode(corpus.generate("harbor", 1500, seed=11))           # and its offspring's
    for fam in families:
        own = {k: v for k, v in FAMILIES[fam].items() if k not in SHAPE}  # the family's own: GQA, tied head
        for pop, shape in ((k, v) for k, v in BPE_SHAPES.items() if k in shapes):
            for s in ROOT_SEEDS:
                make(f"{fam}-{pop}-s{s}", fam, pop, f"{fam}-{pop}-s{s}", "bpe", lambda s=s, shape=shape:
                     _train(tiny.build(arch(fam), seed=s, vocab=VOCAB, **shape, **own), data.base, ROOT_STEPS, ROOT_LR, s))
            make(f"{fam}-{pop}-s0-cpt", fam, pop, f"{fam}-{pop}-s0", "bpe", lambda pop=pop: _train(
                AutoModelForCausalLM.from_pretrained(pdir / f"{fam}-{pop}-s0").float(), data.other,
                CHILD_STEPS, CHILD_LR, 11))
        if "toy" not in shapes:
            continue
        toy = {k: v for k, v in embedded.SPEC.items() if k not in ("family", "kv_heads")} | own
        for s in ROOT_SEEDS:
            make(f"{fam}-toy-s{s}", fam, "toy", f"{fam}-toy-s{s}", "toy", lambda s=s: tiny.train(
                tiny.build(arch(fam), seed=embedded.SEED + s, **toy), toy_text, steps=300, seed=12))
        make(f"{fam}-toy-s0-cpt", fam, "toy", f"{fam}-toy-s0", "toy", lambda: tiny.train(
            AutoModelForCausalLM.from_pretrained(pdir / f"{fam}-toy-s0").float(), harbour, steps=100, lr=1e-3, seed=11))
    for fam in families:  # the zoo's own roots and their first child: the 4-layer population
        for s in ROOT_SEEDS:
            models.append(dict(name=f"{fam}-s{s}", family=fam, population="L4", root=f"{fam}-s{s}", tokens="bpe",
                               path=zdir / f"{fam}-s{s}"))
        models.append(dict(name=f"{fam}-s0-cpt", family=fam, population="L4", root=f"{fam}-s0", tokens="bpe",
                           path=zdir / f"{fam}-s0-cpt"))
    return models


def score_pairs(models: list[dict]) -> list[dict]:
    """Every pair of one family on one token list, scored as the zoo scores it (`fingerprint_zoo.score`);
    on the weights only where the hidden sizes agree."""
    from fingerprint import extract as E

    ids = {"bpe": spec.select_tokens(VOCAB), "toy": spec.select_tokens(512)}
    feats = {m["name"]: {"fp": E.extract(m["path"], token_ids=ids[m["tokens"]]), "path": m["path"]} for m in models}
    pairs = []
    for a, b in itertools.combinations(models, 2):
        if a["family"] != b["family"] or a["tokens"] != b["tokens"]:
            continue
        fa, fb = feats[a["name"]], feats[b["name"]]
        row = {"published": a["name"], "suspect": b["name"], "family": a["family"], "tokens": a["tokens"],
               "populations": [a["population"], b["population"]], "related": a["root"] == b["root"]}
        same_width = fa["fp"].model.get("hidden") == fb["fp"].model.get("hidden")
        for basis in CALIBRATED if same_width else ("heads", "invariants", "v"):
            row[basis] = round(score(fa, fb, basis), 2)
        pairs.append(row)
    return pairs


def summarise(pairs: list[dict], zoo_pairs: list[dict], families: tuple[str, ...] = DEFAULT_FAMILIES) -> dict:
    out = {}
    for fam in families:
        for basis in CALIBRATED:
            sel = [p for p in pairs if p["family"] == fam and basis in p]
            neg = [p for p in sel if not p["related"]]
            groups = {}
            for p in neg:
                key = "{} | {}".format(*sorted(p["populations"]))
                groups.setdefault(key, []).append(p[basis])
            zoo = [p for p in zoo_pairs if p["family"] == fam and basis in p]
            pool_neg = [p[basis] for p in neg] + [p[basis] for p in zoo if not p["related"]]
            pool_pos = [p[basis] for p in sel if p["related"]] + [p[basis] for p in zoo if p["related"]]
            top = max(neg, key=lambda p: p[basis])
            out[f"{fam}/{basis}"] = {
                "unrelated_by_populations": {k: {"n": len(v), "mean": round(float(np.mean(v)), 1),
                                                 "max": round(float(np.max(v)), 1)} for k, v in sorted(groups.items())},
                "highest_unrelated": [top["published"], top["suspect"], top[basis]],
                "related": {p["suspect"]: p[basis] for p in sel if p["related"]},
                "pooled": {"n_unrelated": len(pool_neg), "n_related": len(pool_pos),
                           "unrelated_mean": round(float(np.mean(pool_neg)), 1),
                           "unrelated_sd": round(float(np.std(pool_neg)), 1),
                           "unrelated_max": round(float(np.max(pool_neg)), 1), "related_min": float(np.min(pool_pos))},
                "rule": rule(float(np.min(pool_pos)), float(np.max(pool_neg)), float(np.mean(pool_neg)),
                             float(np.std(pool_neg)), basis),
                "shipped": C.THRESHOLDS[KIND[fam]][basis]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True, help="the zoo folder of benchmarks/fingerprint_zoo.py (built)")
    ap.add_argument("--zoo-results", default=str(ROOT / "benchmarks" / "results" / "fingerprint_zoo.json"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "null_populations.json"))
    ap.add_argument("--extra", action="append", default=[], metavar="RESULTS.json",
                    help="also pool the pairs of a population trained by benchmarks/scale_population.py")
    ap.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), choices=sorted(KIND),
                    help="llama-tied: Llamas whose output head is the embedding (its zoo from zoo_build.py)")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES,
                    help="the populations to train and score (the zoo's 4-layer one always)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    t = time.time()
    models = build_populations(Path(args.zoo), tuple(args.families), tuple(args.shapes))
    log(f"{len(models)} models ready ({time.time() - t:.0f}s)")
    pairs = score_pairs(models)
    for extra in args.extra:
        pairs += json.loads(Path(extra).read_text())["pairs"]
    summary = summarise(pairs, json.loads(Path(args.zoo_results).read_text())["pairs"], tuple(args.families))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "pairs": pairs}, indent=1))
    for key, r in summary.items():
        log(f"\n{key}: highest unrelated {r['highest_unrelated']}; related {r['related']}")
        for pops, g in r["unrelated_by_populations"].items():
            log(f"  unrelated {pops:12s} n={g['n']:3d} mean {g['mean']:5.1f} max {g['max']:5.1f}")
        log(f"  pooled with the zoo: {r['pooled']}\n  rule: {r['rule']}\n  shipped: {r['shipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
