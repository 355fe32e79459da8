"""Evaluation zoo with a trained 4096-token vocabulary and structural derivations (llama, gpt2).

    python benchmarks/zoo_build.py --zoo DIR [--families llama gpt2 llama-tied] [--analyze]

Text: `zkfp.zoo.corpus.generate_wide` (a pseudo-language of ~26k words). A byte-level BPE of 4096
ids is trained on the base text and stored once in DIR/tokenizer; the training streams are
tokenized with seeded un-merge dropout (`zkfp.zoo.tokenizer.encode_lines`) so that (nearly)
every id in [256, 4096) — in particular the spec's fingerprint rows — occurs, and is trained.

Per family: four seed twins trained on the same base stream (roots s0..s3); children of s0
(continued pretraining on another topic mix, LoRA, magnitude pruning, int8, vocabulary
extension, dropping the last / a middle block, duplicating a block with and without healing,
MLP width pruning, GQA → MHA, a merge of two fine-tunes, 5× continued pretraining, the Tall
disguise); and the structural children of twin s1, to check that the same derivation applied
to an unrelated model stays unrelated. Every model is a transformers checkpoint with its
tokenizer and a zoo.json (kind, root, losses, seconds); models already built are skipped.
The families are llama (its own output head) and gpt2 (head tied to the embedding), as
transformers configures them, and on request llama-tied (the same Llamas with the head tied; the
Tall disguise unties it, as it does GPT-2's).

`--analyze` adds per-layer invariant-term similarities over all layers (the current
fingerprint code, spec tokens for vocab 4096), with the token rows as the spec takes them and
whitened (a candidate fix for twins that share the data's token geometry), and the twins'
token Gram similarity, to DIR/analysis.json and DIR/analysis.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizers: one thread (shared machine)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fingerprint import disguise, lineage  # noqa: E402

VOCAB = 4096
SHAPE = dict(hidden=64, layers=4, heads=4, vocab=VOCAB)
FAMILIES = {"llama": dict(SHAPE, kv_heads=2), "gpt2": dict(SHAPE),
            "llama-tied": dict(SHAPE, kv_heads=2, tied=True)}  # output head tied to the embedding (opt-in)
DEFAULT_FAMILIES = ("llama", "gpt2")  # as transformers configures each: Llama's head its own, GPT-2's tied
KIND = {"llama": "gated", "gpt2": "plain", "llama-tied": "gated-tied"}  # zoo family → compare.THRESHOLDS kind


def arch(fam: str) -> str:
    """The transformers family a zoo family builds (llama-tied is a llama)."""
    return fam.removesuffix("-tied")
ROOT_SEEDS = (0, 1, 2, 3)
ROOT_STEPS, ROOT_LR = 600, 3e-3
CHILD_STEPS, CHILD_LR = 150, 1e-3  # fine-tunes and healing
VEXT_STEPS, VEXT_NEW = 300, 256    # vocabulary extension: new ids, training steps
HEAVY_STEPS = 5 * ROOT_STEPS
N_BASE, N_OTHER, N_FOREIGN = 400_000, 200_000, 100_000  # sentences
UNMERGE_P = 0.1
MID = SHAPE["layers"] // 2  # the block dropped by drop-middle; insert-copy duplicates block MID - 1
S1_KINDS = ("drop-last", "drop-middle", "insert-copy-heal", "width-prune", "vocab-ext", "heavy-cpt")


def log(*a) -> None:
    print(*a, flush=True)


# -- data ------------------------------------------------------------------------------------------
class Data:
    """Tokenizers and token streams, built once and cached under zdir/data (npy, no pickle)."""

    def __init__(self, zdir: Path):
        from tokenizers import Tokenizer

        from zkfp.zoo import tokenizer as T
        from zkfp.zoo.corpus import generate_wide

        self.dir = zdir / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        tok_file, ext_file = self.dir / "bpe4096.json", self.dir / "bpe4096-ext.json"
        base_lines = None
        if not tok_file.is_file():
            t = time.time()
            base_lines = generate_wide(N_BASE, seed=0).splitlines()
            T.train_bpe(base_lines, VOCAB).save(str(tok_file))
            log(f"  trained BPE {VOCAB} in {time.time() - t:.0f}s")
        self.tok = Tokenizer.from_file(str(tok_file))
        foreign = generate_wide(N_FOREIGN, seed=3, phonology="foreign").splitlines()
        if not ext_file.is_file():
            T.extend_bpe(self.tok, foreign, VEXT_NEW).save(str(ext_file))
        self.ext = Tokenizer.from_file(str(ext_file))
        if not (zdir / "tokenizer" / "tokenizer.json").is_file():
            T.save_tokenizer(self.tok, zdir / "tokenizer")
            T.save_tokenizer(self.ext, zdir / "tokenizer-ext")

        def stream(name: str, make_lines, tok, p: float = UNMERGE_P) -> torch.Tensor:
            f = self.dir / f"{name}.npy"
            if not f.is_file():
                np.save(f, T.encode_lines(tok, make_lines(), unmerge_p=p, seed=0))
            return torch.from_numpy(np.load(f, allow_pickle=False))

        self.base = stream("base", lambda: base_lines or generate_wide(N_BASE, seed=0).splitlines(), self.tok)
        self.other = stream("other", lambda: generate_wide(N_OTHER, seed=1, domain=1).splitlines(), self.tok)
        self.third = stream("third", lambda: generate_wide(N_OTHER, seed=2, domain=2).splitlines(), self.tok)
        # Vocabulary extension: half base-language lines, half foreign lines (where the new ids occur).
        mix = lambda n, s: [ln for pair in zip(generate_wide(n, seed=s).splitlines(),  # noqa: E731
                                                  generate_wide(n, seed=s, phonology="foreign").splitlines())
                             for ln in pair]
        self.vext = stream("vext", lambda: mix(N_FOREIGN, 4), self.ext)
        # Held-out evaluation streams, tokenized as at inference (no un-merging).
        self.val = {
            "base": stream("val-base", lambda: generate_wide(5000, seed=100).splitlines(), self.tok, 0.0),
            "other": stream("val-other", lambda: generate_wide(5000, seed=101, domain=1).splitlines(), self.tok, 0.0),
            "third": stream("val-third", lambda: generate_wide(5000, seed=102, domain=2).splitlines(), self.tok, 0.0),
            "vext": stream("val-vext", lambda: mix(2500, 103), self.ext, 0.0),
        }


def token_report(data: Data) -> dict:
    """How often the spec's fingerprint rows (and every id in [256, 4096)) occur in the base stream."""
    from fingerprint import spec
    from zkfp.zoo.tokenizer import encode_lines
    from zkfp.zoo.corpus import generate_wide

    sel = spec.select_tokens(VOCAB)
    out = {"selected_ids": sel, "stream_tokens": len(data.base),
           "tokens_seen_per_root": ROOT_STEPS * 16 * 64}
    plain = encode_lines(data.tok, generate_wide(N_BASE, seed=0).splitlines())
    for name, ids in (("plain", plain), ("unmerge", data.base.numpy())):
        c = np.bincount(ids, minlength=VOCAB)[:VOCAB]
        s = c[sel]
        out[name] = {"selected_counts": [int(x) for x in s], "selected_min": int(s.min()),
                     "selected_median": float(np.median(s)),
                     "frac_ids_256_4096_seen": float((c[256:VOCAB] > 0).mean()),
                     "ids_256_4096_unseen": int((c[256:VOCAB] == 0).sum()),
                     "frac_ids_256_4096_ge100": float((c[256:VOCAB] >= 100).mean())}
    out["selected_tokens"] = [data.tok.id_to_token(i) for i in sel]
    return out


# -- building ----------------------------------------------------------------------------------------
def eval_loss(model, ids: torch.Tensor, n: int = 32, seq: int = 64) -> float:
    """Mean next-token loss on `n` fixed windows of a held-out stream."""
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(0, len(ids) - seq - 1, (n,), generator=gen)
    x = torch.stack([ids[s : s + seq] for s in starts])
    with torch.no_grad():
        return float(model.float()(input_ids=x, labels=x).loss)


def _train(model, ids, steps, lr, seed):
    from zkfp.zoo.tiny import train

    return train(model, ids, steps=steps, lr=lr, seed=seed)


def save_trained(model, path: Path, tokenizer, data: Data, started: float, note: str = "") -> None:
    """Save a model trained outside the zoo's recipes (benchmarks' extra populations) and log it."""
    model = model.float().eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    log(f"  {path.name}: {note}{time.time() - started:.0f} s, loss on base {eval_loss(model, data.val['base']):.3f}")


def _recipes(fam: str, data: Data) -> dict:
    """kind → (function of the parent model, training domain for the 'own' loss)."""
    heal = lambda m: _train(m, data.base, CHILD_STEPS, CHILD_LR, 14)  # noqa: E731
    r = {
        "cpt": (lambda m: _train(m, data.other, CHILD_STEPS, CHILD_LR, 11), "other"),
        "ft-b": (lambda m: _train(m, data.third, CHILD_STEPS, CHILD_LR, 13), "third"),
        "lora": (lambda m: lineage.lora_finetune(m, data.third, steps=CHILD_STEPS, seed=12), "third"),
        "prune30": (lambda m: lineage.magnitude_prune(m, 0.3), "base"),
        "int8": (lineage.int8_roundtrip, "base"),
        "vocab-ext": (lambda m: _train(lineage.extend_vocab(m, VEXT_NEW, seed=15), data.vext, VEXT_STEPS, CHILD_LR, 15),
                      "vext"),
        "drop-last": (lambda m: heal(lineage.drop_layer(m, -1)), "base"),
        "drop-middle": (lambda m: heal(lineage.drop_layer(m, MID)), "base"),
        "insert-copy": (lambda m: lineage.insert_layer_copy(m, MID - 1), "base"),
        "insert-copy-heal": (lambda m: heal(lineage.insert_layer_copy(m, MID - 1)), "base"),
        "width-prune": (lambda m: heal(lineage.width_prune(m, 0.25)), "base"),
        "heavy-cpt": (lambda m: _train(m, data.other, HEAVY_STEPS, CHILD_LR, 17), "other"),
    }
    if arch(fam) == "llama":
        r["gqa-to-mha"] = (lineage.gqa_to_mha, "base")
    return r


def build_zoo(zdir: Path, families=DEFAULT_FAMILIES) -> list[dict]:
    """Build (or reuse) the zoo under `zdir`; one dict per model: name, path, family, root, kind,
    plus layers, vocab, intermediate, val_loss (base text), own_loss (its last training text), seconds."""
    from transformers import AutoModelForCausalLM

    from zkfp.zoo.tiny import build
    from zkfp.zoo.tokenizer import as_transformers

    zdir.mkdir(parents=True, exist_ok=True)
    data = Data(zdir)
    hf_tok, hf_ext = as_transformers(data.tok), as_transformers(data.ext)
    models: list[dict] = []

    def make(name: str, fam: str, root: str, kind: str, fn, own: str, parent: Path | None = None) -> None:
        p = zdir / name
        meta_file = p / "zoo.json"
        if not meta_file.is_file():
            t = time.time()
            torch.manual_seed(0)
            model = fn(None if parent is None else AutoModelForCausalLM.from_pretrained(parent).float().eval())
            model = model.float().eval()
            cfg = model.config
            meta = dict(name=name, family=fam, root=root, kind=kind, layers=cfg.num_hidden_layers,
                        vocab=cfg.vocab_size,
                        intermediate=(cfg.n_inner or 4 * cfg.n_embd) if fam == "gpt2" else cfg.intermediate_size,
                        kv_heads=cfg.num_attention_heads if fam == "gpt2" else cfg.num_key_value_heads,
                        val_loss=round(eval_loss(model, data.val["base"]), 3),
                        own_loss=round(eval_loss(model, data.val[own]), 3), own_domain=own)
            model.save_pretrained(p)
            (hf_ext if cfg.vocab_size > VOCAB else hf_tok).save_pretrained(p)
            meta["seconds"] = round(time.time() - t, 1)
            meta_file.write_text(json.dumps(meta, indent=1))
            log(f"  {name:26s} {kind:17s} L={meta['layers']} V={meta['vocab']} I={meta['intermediate']} "
                f"loss={meta['val_loss']:.3f}/{meta['own_loss']:.3f} {meta['seconds']:.0f}s")
        meta = json.loads(meta_file.read_text())
        models.append(dict(meta, path=p))

    for fam in families:
        kw = FAMILIES[fam]
        for seed in ROOT_SEEDS:
            make(f"{fam}-s{seed}", fam, f"{fam}-s{seed}", "root",
                 lambda _m, s=seed: _train(build(arch(fam), seed=s, **kw), data.base, ROOT_STEPS, ROOT_LR, s), "base")
        recipes = _recipes(fam, data)
        s0 = zdir / f"{fam}-s0"
        for kind, (fn, own) in recipes.items():
            make(f"{fam}-s0-{kind}", fam, f"{fam}-s0", kind, fn, own, s0)
        make(f"{fam}-s0-merge", fam, f"{fam}-s0", "merge",
             lambda _m: lineage.merge(*(AutoModelForCausalLM.from_pretrained(zdir / f"{fam}-s0-{k}").float()
                                        for k in ("cpt", "ft-b"))), "other")
        ts = disguise.LLAMA_TRANSFORMS if arch(fam) == "llama" else disguise.GPT2_TRANSFORMS

        def tall(m):
            child = disguise.apply(m, ts, seed=22)
            log(f"  Tall: max |Δlogit| = {disguise.logits_close(m, child, atol=1e-4):.2e}")
            return child
        make(f"{fam}-s0-Tall", fam, f"{fam}-s0", "Tall", tall, "base", s0)
        for kind in S1_KINDS:
            fn, own = recipes[kind]
            make(f"{fam}-s1-{kind}", fam, f"{fam}-s1", kind, fn, own, zdir / f"{fam}-s1")
    return models


# -- preliminary analysis: per-layer invariant-term similarity over all layers ------------------------
TERM_NAMES = ("qk", "vo", "mlp")


def _whiten_rows(X: torch.Tensor) -> torch.Tensor:
    """(X Xᵀ)^(-1/2) X: the k token rows made orthonormal. Still invariant to the disguises (X → X·Q
    maps to X_w·Q), but drops the token geometry (X Xᵀ), which training on the same data makes
    similar even across seed twins (see `gram` in the analysis)."""
    X = X.double()
    e, U = torch.linalg.eigh(X @ X.T)
    return (U @ torch.diag(e.clamp_min(1e-12 * float(e.max())) ** -0.5) @ U.T @ X).float()


def _zterms(path: Path, ids: list[int], whiten: bool = False) -> torch.Tensor:
    """(L, 3, k²) z-scored invariant terms of every block (token rows whitened if `whiten`)."""
    from fingerprint import extract as E
    from fingerprint import invariants as inv
    from fingerprint.sources import open_source

    src = open_source(path)
    L = src.arch.dims.layers
    if whiten:  # wrap this source's row reader (leaves extract.py alone); centring first for LayerNorm
        rows, ln = src.embedding_rows, src.arch.family.norm == "layer"
        src.embedding_rows = lambda t: _whiten_rows(inv.canonical_tokens(rows(t), ln))
    terms = E.terms_from_source(src, ids)  # (L, 3, k, k), every block
    return torch.stack([torch.stack([inv.zscore(terms[i, t]).reshape(-1) for t in range(3)]) for i in range(L)])


def _gram(path: Path, ids: list[int]) -> torch.Tensor:
    """Off-diagonal entries of the canonical token rows' Gram matrix X Xᵀ, z-scored."""
    from fingerprint import invariants as inv
    from fingerprint.sources import open_source

    src = open_source(path)
    X = inv.canonical_tokens(src.embedding_rows(ids), src.arch.family.norm == "layer").double()
    G = X @ X.T
    return inv.zscore(G[~torch.eye(len(ids), dtype=torch.bool)])


def _aligned(kind: str, la: int, lb: int) -> list[tuple[int, int]]:
    """Which child block computes what parent block i did (for pairs with lineage)."""
    if kind == "drop-last":
        return [(i, i) for i in range(lb)]
    if kind == "drop-middle":
        return [(i, i if i < MID else i - 1) for i in range(la) if i != MID]
    if kind.startswith("insert-copy"):
        c = MID - 1
        return [(i, i if i <= c else i + 1) for i in range(la)] + [(c, c + 1)]
    return [(i, i) for i in range(min(la, lb))]


def pair_stats(za: torch.Tensor, zb: torch.Tensor, kind: str) -> dict:
    from fingerprint.compare import layer_similarities

    za, zb = za.double().numpy(), zb.double().numpy()
    mats = {"all": layer_similarities(za.reshape(len(za), -1), zb.reshape(len(zb), -1))}
    for t, name in enumerate(TERM_NAMES):
        mats[name] = layer_similarities(za[:, t], zb[:, t])
    al = _aligned(kind, len(za), len(zb))
    out = {"layers": [len(za), len(zb)], "aligned_pairs": al}
    for name, M in mats.items():
        out[name] = {"matrix": [[round(float(x), 1) for x in row] for row in M],
                     "aligned": [round(float(M[i, j]), 1) for i, j in al],
                     "aligned_mean": round(float(np.mean([float(M[i, j]) for i, j in al])), 1),
                     "max": round(float(M.max()), 1),
                     "best_per_parent_layer": [round(float(x), 1) for x in M.max(axis=1)]}
    return out


def analyze(zdir: Path, models: list[dict]) -> dict:
    """Per-layer similarities for: s0 vs each s0 child, s0 vs twins s1..s3, s0 (unrelated) and s1
    (related) vs each s1 child; raw token rows (as the spec) and whitened rows."""
    from fingerprint import spec

    ids = spec.select_tokens(VOCAB)
    res: dict = {"token_ids": ids, "pairs": {}, "pairs_whitened": {}, "gram": {}}
    for key, whiten in (("pairs", False), ("pairs_whitened", True)):
        Z = {m["name"]: _zterms(m["path"], ids, whiten) for m in models}
        for m in models:
            fam = m["family"]
            if m["name"] == f"{fam}-s0":
                continue
            if m["root"] == f"{fam}-s0":
                groups = [(f"{fam}-s0", "related")]
            elif m["kind"] == "root":
                groups = [(f"{fam}-s0", "twin")]
            else:  # an s1 child: unrelated to s0, related to s1
                groups = [(f"{fam}-s0", "unrelated"), (f"{fam}-s1", "related")]
            for a, rel in groups:
                st = pair_stats(Z[a], Z[m["name"]], m["kind"] if rel != "twin" else "root")
                res[key][f"{a} vs {m['name']}"] = dict(st, relation=rel, family=fam, kind=m["kind"])
    for m in models:
        fam = m["family"]
        if m["kind"] == "root" and m["name"] != f"{fam}-s0":
            g0, g1 = _gram(zdir / f"{fam}-s0", ids), _gram(m["path"], ids)
            res["gram"][f"{fam}-s0 vs {m['name']}"] = round(float(100 * (g0 @ g1) / (g0.norm() * g1.norm())), 1)
    (zdir / "analysis.json").write_text(json.dumps(res, indent=1))
    (zdir / "analysis.md").write_text(_summary(res))
    return res


def _summary(res: dict) -> str:
    lines = ["# Per-layer invariant-term similarity (100·cos, spec tokens, all layers)", "",
             "aligned: child block(s) computing the parent's block i (drop-middle skips the dropped block;",
             "insert-copy lists the copy last); mean: over aligned pairs; max: over all L×L' layer pairs.", "",
             "Token Gram matrix X Xᵀ (off-diagonal, z-scored) of twins, 100·cos: "
             + ", ".join(f"{k} {v:.0f}" for k, v in res["gram"].items()), ""]
    for key, title in (("pairs", "raw token rows (the spec)"), ("pairs_whitened", "whitened token rows")):
        lines += [f"# {title}", ""]
        for fam in sorted({p["family"] for p in res[key].values()}):
            lines += [f"## {fam}", "",
                      "| pair | rel | all aligned (mean) | qk mean | vo mean | mlp mean | all max | qk max | vo max | mlp max |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for name, p in res[key].items():
                if p["family"] != fam:
                    continue
                al = " ".join(f"{x:.0f}" for x in p["all"]["aligned"])
                lines.append(f"| {name} | {p['relation']} | {al} ({p['all']['aligned_mean']:.1f}) | "
                             + " | ".join(f"{p[t]['aligned_mean']:.1f}" for t in TERM_NAMES) + " | "
                             + " | ".join(f"{p[t]['max']:.1f}" for t in ("all",) + TERM_NAMES) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _table(models: list[dict]) -> str:
    rows = ["| name | kind | layers | vocab | intermediate | kv | loss base | loss own (domain) | s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        rows.append(f"| {m['name']} | {m['kind']} | {m['layers']} | {m['vocab']} | {m['intermediate']} | "
                    f"{m['kv_heads']} | {m['val_loss']:.3f} | {m['own_loss']:.3f} ({m['own_domain']}) | {m['seconds']:.0f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), choices=sorted(FAMILIES))
    ap.add_argument("--analyze", action="store_true", help="also write analysis.json / analysis.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    zdir = Path(args.zoo)
    t0 = time.time()
    models = build_zoo(zdir, tuple(args.families))
    log(f"\nzoo ready: {len(models)} models in {time.time() - t0:.0f}s (this run)")
    tokf = zdir / "tokens.json"
    if not tokf.is_file():
        tokf.write_text(json.dumps(token_report(Data(zdir)), indent=1))
    rep = json.loads(tokf.read_text())
    for k in ("plain", "unmerge"):
        r = rep[k]
        log(f"spec ids in the base stream ({k}): min {r['selected_min']}, median {r['selected_median']:.0f}; "
            f"ids in [256,4096) seen: {r['frac_ids_256_4096_seen']:.4f} ({r['ids_256_4096_unseen']} unseen), "
            f"≥100×: {r['frac_ids_256_4096_ge100']:.3f}")
    log(f"selected counts (unmerge): {rep['unmerge']['selected_counts']}")
    log(_table(models))
    log(f"total build seconds (sum over models): {sum(m['seconds'] for m in models):.0f}")
    if args.analyze:
        t = time.time()
        analyze(zdir, models)
        log(f"\nanalysis ({time.time() - t:.0f}s):\n" + (zdir / "analysis.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
