"""Evaluation zoo for the fingerprint: related vs unrelated tiny models, two families.

    python benchmarks/fingerprint_zoo.py [--zoo DIR] [--out benchmarks/results/fingerprint_zoo.json] [--images docs/images]

Builds (and caches under --zoo) per family (llama, gpt2): four seed twins trained on the same
text (unrelated roots), and offspring of root 0: continued training on another domain (cpt),
a merged hand-written LoRA (lora), 30% magnitude pruning (prune30), an int8 round-trip (int8),
and the function-preserving disguises T1-T6 and all of them at once (logits checked unchanged).
Then fingerprints every model with three token choices (the spec's rule; only ids the training
text contains; only ids it never contains) and reports, for the invariants (ICS), for v (the
spec's encoder, and the trained MLP encoder if its weights exist) and for HuRef's original
formula: the ICS table, AUC and TPR at 1% FPR. Also the correlation between image similarity
and cosine of v, and example images.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fingerprint import disguise, lineage, spec  # noqa: E402
from fingerprint import extract as E  # noqa: E402
from fingerprint import invariants as inv  # noqa: E402
from fingerprint.encoder import load_weights, mlp, project, projection_matrix  # noqa: E402

FAMILIES = {"llama": dict(hidden=64, layers=3, heads=4, kv_heads=2), "gpt2": dict(hidden=64, layers=3, heads=4)}
ROOT_SEEDS = (0, 1, 2, 3)
BASE_STEPS, CHILD_STEPS = 300, 150
BASE_DOMAIN, CHILD_DOMAIN, LORA_DOMAIN = "forest", "harbor", "kitchen"


def log(*a):
    print(*a, flush=True)


# -- building ---------------------------------------------------------------------------------
def build_zoo(zdir: Path) -> list[dict]:
    from transformers import AutoModelForCausalLM

    from zkfp.zoo.corpus import generate
    from zkfp.zoo.tiny import build, encode, save, train

    zdir.mkdir(parents=True, exist_ok=True)
    models = []

    def have(p: Path) -> bool:
        return (p / "config.json").is_file()

    for fam, kw in FAMILIES.items():
        for seed in ROOT_SEEDS:
            p = zdir / f"{fam}-s{seed}"
            if not have(p):
                t = time.time()
                m = build(fam, seed=seed, **kw)
                train(m, encode(generate(BASE_DOMAIN, n_sentences=3000, seed=100)), steps=BASE_STEPS, seed=seed)
                save(m, p)
                log(f"  built {p.name} in {time.time() - t:.0f}s")
            models.append(dict(name=p.name, path=p, family=fam, root=f"{fam}-s{seed}", kind="root"))
        base_path = zdir / f"{fam}-s0"
        load = lambda: AutoModelForCausalLM.from_pretrained(base_path).float().eval()  # noqa: E731
        children = {
            "cpt": lambda m: train(m, encode(generate(CHILD_DOMAIN, n_sentences=3000, seed=7)), steps=CHILD_STEPS,
                                   lr=1e-3, seed=11),
            "lora": lambda m: lineage.lora_finetune(m, encode(generate(LORA_DOMAIN, n_sentences=3000, seed=8)),
                                                    steps=CHILD_STEPS, seed=12),
            "prune30": lambda m: lineage.magnitude_prune(m, 0.3),
            "int8": lineage.int8_roundtrip,
        }
        ts = disguise.LLAMA_TRANSFORMS if fam == "llama" else disguise.GPT2_TRANSFORMS
        for t in ts:
            children[t] = (lambda t: lambda m: disguise.apply(m, [t], seed=21))(t)
        children["Tall"] = lambda m: disguise.apply(m, ts, seed=22)
        for kind, fn in children.items():
            p = zdir / f"{fam}-s0-{kind}"
            if not have(p):
                t = time.time()
                base = load()
                child = fn(load())
                if kind.startswith("T"):
                    err = disguise.logits_close(base, child, atol=1e-4)
                    log(f"  {p.name}: max |Δlogit| = {err:.2e}")
                save(child.float(), p, dtype=torch.float32)
                log(f"  built {p.name} in {time.time() - t:.0f}s")
            models.append(dict(name=p.name, path=p, family=fam, root=f"{fam}-s0", kind=kind))
    return models


# -- fingerprints -----------------------------------------------------------------------------
def token_sets() -> dict[str, list[int]]:
    from zkfp.zoo.corpus import DOMAINS, generate
    from zkfp.zoo.tiny import encode

    seen = set(encode(generate(sorted(DOMAINS), n_sentences=20000, seed=5)).tolist())
    vocab = 512
    return {
        "spec": spec.select_tokens(vocab),
        "touched": spec.select_tokens(vocab, candidates=sorted(seen)),
        "untouched": spec.select_tokens(vocab, candidates=[i for i in range(vocab) if i not in seen]),
    }


# -- metrics ----------------------------------------------------------------------------------
def auc(pos: list[float], neg: list[float]) -> float:
    pos, neg = np.asarray(pos), np.asarray(neg)
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def tpr_at_fpr(pos: list[float], neg: list[float], fpr: float = 0.01) -> float:
    neg = np.sort(np.asarray(neg))
    allowed = int(math.floor(fpr * len(neg)))  # unrelated pairs allowed above the threshold
    thr = neg[len(neg) - 1 - allowed]
    return float((np.asarray(pos) > thr).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=str(Path(tempfile.gettempdir()) / "zkfp-fingerprint-zoo"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fingerprint_zoo.json"))
    ap.add_argument("--images", default=str(ROOT / "docs" / "images"))
    args = ap.parse_args(argv)
    t0 = time.time()
    log("building zoo ...")
    models = build_zoo(Path(args.zoo))
    log(f"zoo ready: {len(models)} models ({time.time() - t0:.0f}s)")

    tsets = token_sets()
    weights = load_weights()
    n = spec.invariant_length()
    P = projection_matrix(n)
    has_mlp = "mlp.w1" in weights and weights["mlp.w1"].shape[1] == n
    feats: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    t1 = time.time()
    for ts_name, ids in tsets.items():
        feats[ts_name] = {}
        for m in models:
            fp = E.extract(m["path"], token_ids=ids)
            z = fp.invariant_tensor().float()
            f = {"invariants": z, "v": project(z, P), "huref": E.huref_vector(m["path"], ids)}
            if has_mlp:
                f["v_mlp"] = mlp(z, weights["mlp.w1"], weights["mlp.b1"], weights["mlp.w2"], weights["mlp.b2"])
            feats[ts_name][m["name"]] = f
    log(f"fingerprinted {len(models)} models × {len(tsets)} token sets in {time.time() - t1:.0f}s "
        f"({(time.time() - t1) / len(models) / len(tsets):.2f}s per fingerprint incl. HuRef baseline)")

    pairs = list(itertools.combinations(models, 2))
    results = {"token_sets": tsets, "n_models": len(models), "n_related_pairs": 0, "n_unrelated_pairs": 0,
               "methods": {}, "table": {}}
    methods = ["invariants", "v", "huref"] + (["v_mlp"] if has_mlp else [])
    for ts_name in tsets:
        F = feats[ts_name]
        for meth in methods:
            pos, neg = [], []
            for a, b in pairs:
                s = inv.ics(F[a["name"]][meth], F[b["name"]][meth])
                (pos if a["root"] == b["root"] else neg).append(s)
            results["n_related_pairs"], results["n_unrelated_pairs"] = len(pos), len(neg)
            if ts_name == "spec":
                results.setdefault("scores", {})[meth] = {"related": pos, "unrelated": neg}
            results["methods"][f"{ts_name}/{meth}"] = {
                "auc": auc(pos, neg), "tpr_at_1pct_fpr": tpr_at_fpr(pos, neg),
                "related_min": min(pos), "related_mean": float(np.mean(pos)),
                "unrelated_max": max(neg), "unrelated_mean": float(np.mean(neg)), "unrelated_sd": float(np.std(neg)),
                "unrelated_abs_max": float(np.max(np.abs(neg))),
            }
            if ts_name == "spec" and meth in ("invariants", "v"):
                from fingerprint.compare import THRESHOLDS

                t = THRESHOLDS[meth]
                results.setdefault("verdicts", {})[meth] = {
                    "thresholds": t,
                    "related": {v: sum(_verdict(x, t) == v for x in pos) for v in ("same-lineage", "inconclusive", "unrelated")},
                    "unrelated": {v: sum(_verdict(x, t) == v for x in neg) for v in ("same-lineage", "inconclusive", "unrelated")},
                }
        # ICS table: each offspring of root 0 vs its base; twins vs base.
        table = {}
        for m in models:
            base = f"{m['family']}-s0"
            if m["name"] == base:
                continue
            row = {meth: round(inv.ics(F[base][meth], F[m["name"]][meth]), 2) for meth in methods}
            table[m["name"]] = row
        results["table"][ts_name] = table

    # Gaussianity of v's coordinates over unrelated roots (one per lineage), pooled.
    from scipy import stats

    pooled = np.concatenate([feats["spec"][m["name"]]["v"].numpy() for m in models if m["kind"] == "root"])
    results["v_normality"] = {"n": int(pooled.size), "shapiro_p": float(stats.shapiro(pooled).pvalue),
                              "normaltest_p": float(stats.normaltest(pooled).pvalue),
                              "mean": float(pooled.mean()), "std": float(pooled.std())}

    # Images: similarity of renders vs cosine of v.
    from fingerprint.render import image_similarity, render

    imgs = {m["name"]: render(feats["spec"][m["name"]]["v"].tolist()) for m in models}
    cos_v, pix = [], []
    for a, b in pairs:
        cos_v.append(inv.ics(feats["spec"][a["name"]]["v"], feats["spec"][b["name"]]["v"]) / 100)
        pix.append(image_similarity(imgs[a["name"]], imgs[b["name"]]))
    results["image_vs_v"] = {"pearson_r": float(np.corrcoef(cos_v, pix)[0, 1]),
                             "spearman_r": float(stats.spearmanr(cos_v, pix).statistic)}
    _save_images(Path(args.images), imgs)

    results["seconds"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    _print(results, methods)
    return 0


def _verdict(x: float, t: dict) -> str:
    return "same-lineage" if x >= t["related"] else "unrelated" if x <= t["unrelated"] else "inconclusive"


def _save_images(out: Path, imgs: dict) -> None:
    from PIL import Image, ImageDraw

    out.mkdir(parents=True, exist_ok=True)
    for fam in FAMILIES:
        rows = [[f"{fam}-s0", f"{fam}-s0-cpt", f"{fam}-s0-lora", f"{fam}-s0-prune30", f"{fam}-s0-int8", f"{fam}-s0-Tall"],
                [f"{fam}-s1", f"{fam}-s2", f"{fam}-s3"]]
        cell = 160
        sheet = Image.new("RGB", (cell * 6, (cell + 18) * 2), "white")
        draw = ImageDraw.Draw(sheet)
        for r, row in enumerate(rows):
            for c, name in enumerate(row):
                sheet.paste(imgs[name].resize((cell, cell), Image.LANCZOS), (c * cell, r * (cell + 18) + 18))
                draw.text((c * cell + 4, r * (cell + 18) + 3), name, fill="black")
        sheet.save(out / f"fingerprint-zoo-{fam}.png")


def _print(res: dict, methods: list[str]) -> None:
    log(f"\n{res['n_models']} models, {res['n_related_pairs']} related / {res['n_unrelated_pairs']} unrelated pairs")
    log("| tokens | method | AUC | TPR@1%FPR | related min / mean | unrelated mean ± sd (max) |")
    log("|---|---|---|---|---|---|")
    for key, r in res["methods"].items():
        ts, meth = key.split("/")
        log(f"| {ts} | {meth} | {r['auc']:.3f} | {r['tpr_at_1pct_fpr']:.2f} | {r['related_min']:.1f} / "
            f"{r['related_mean']:.1f} | {r['unrelated_mean']:.1f} ± {r['unrelated_sd']:.1f} ({r['unrelated_max']:.1f}) |")
    for ts in res["table"]:
        log(f"\nICS vs the family's root 0, tokens = {ts}")
        log("| model | " + " | ".join(methods) + " |")
        log("|---|" + "---|" * len(methods))
        for name, row in res["table"][ts].items():
            log(f"| {name} | " + " | ".join(f"{row[m]:.1f}" for m in methods) + " |")
    log(f"\nverdicts at the shipped thresholds (spec tokens): {json.dumps(res.get('verdicts'))}")
    log(f"\nv normality (pooled roots): {res['v_normality']}")
    log(f"image similarity vs cos(v): {res['image_vs_v']}")
    log(f"total {res['seconds']}s")


if __name__ == "__main__":
    sys.exit(main())
