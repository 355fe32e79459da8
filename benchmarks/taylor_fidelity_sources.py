"""Fidelity of default Taylor releases on prompts calibration never saw, both MLP families.

For each family (llama: gated SiLU; gpt2: GELU), train a tiny model on three corpus domains,
save it with and without its tokenizer, protect each copy with `taylor.protect`'s DEFAULT
options, and compare greedy generation of the release with the original's (P prompts × K new
tokens, batch of equal-length prompts) on four prompt sources:
  corpus   — the training corpus (another seed): what the old default calibration looked like
  french   — French text (zkfp.zoo.foreign), another language
  code     — Python source of this project (taylor/*.py)
  random   — uniformly random token ids
Reports the share of identical sequences, of equal tokens, the guard fallback rate
(`zkfp generate --stats`'s figure) over the release's generations, and the share of MLP neurons
the release expands (≈70 % by default). `--terms 4,8` also evaluates the release at those N
below its own (orders ≤ N only: the same as a release made with that N, whose lower orders
and guard are identical), for a table of N × family × prompt source.

    python benchmarks/taylor_fidelity_sources.py [--steps 400] [--prompts 50] [--new-tokens 64]
        [--hidden 64] [--layers 4] [--terms 4,8] [--models DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model")


def windows(ids: torch.Tensor, n: int, length: int, seed: int) -> torch.Tensor:
    """n prompts of `length` tokens starting at random offsets of a token stream."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - length, (n,), generator=gen)
    return torch.stack([ids[s:s + length] for s in starts])


def prompt_sources(n: int, length: int, vocab: int) -> dict[str, torch.Tensor]:
    import taylor
    from zkfp.zoo.corpus import DOMAINS, generate
    from zkfp.zoo.foreign import FRENCH
    from zkfp.zoo.tiny import encode

    code = "\n".join(p.read_text() for p in sorted(Path(taylor.__file__).parent.glob("*.py")))
    return {
        "corpus": windows(encode(generate(sorted(DOMAINS), n_sentences=2000, seed=777)), n, length, 1),
        "french": windows(encode(FRENCH), n, length, 2),
        "code": windows(encode(code), n, length, 3),
        "random": torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(4)),
    }


def greedy(model, ids: torch.Tensor, k: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k,
                              do_sample=False, pad_token_id=0)[:, ids.shape[1]:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-length", type=int, default=8)
    ap.add_argument("--families", default="llama,gpt2")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3, help="training learning rate (the zoo's default 3e-3)")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--terms", default="", help="comma-separated N below the release's own to evaluate too")
    ap.add_argument("--models", default=None, metavar="DIR",
                    help="keep the trained checkpoints here and reuse them on the next run (compare defaults)")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from taylor.conversion import protect
    from taylor.release import ReleaseReader
    from taylor.runtime import guard_counts, load_release, set_terms
    from zkfp.zoo.tiny import make_trained

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            recipe = "" if (args.lr, args.weight_decay) == (3e-3, 0.0) else f"-lr{args.lr:g}-wd{args.weight_decay:g}"
            ckpt = Path(args.models or tmp) / f"{family}-{args.steps}-{args.layers}x{args.hidden}{recipe}"
            if not (ckpt / "config.json").is_file():
                make_trained(family, ckpt, seed=3, domain=["forest", "kitchen", "harbor"], steps=args.steps,
                             layers=args.layers, hidden=args.hidden, lr=args.lr, weight_decay=args.weight_decay)
            bare = Path(tmp) / f"{family}-no-tokenizer"
            shutil.copytree(ckpt, bare)
            for name in TOKENIZER_FILES:
                (bare / name).unlink(missing_ok=True)
            original = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
            sources = prompt_sources(args.prompts, args.prompt_length, original.config.vocab_size)
            refs = {name: greedy(original, ids, args.new_tokens) for name, ids in sources.items()}
            for label, src in (("tokenizer", ckpt), ("no tokenizer", bare)):
                t0 = time.perf_counter()
                rel = protect(src, Path(tmp) / f"{family}-{label.replace(' ', '-')}-rel")
                protect_s = time.perf_counter() - t0
                released = load_release(rel)
                manifest = json.loads((rel / "manifest.json").read_text())
                reader = ReleaseReader(rel, verify=False)
                inter = reader.arch.dims.intermediate
                reader.close()
                expanded = sum(len(layer["expanded"]) for layer in manifest["layers"]) / (
                    len(manifest["layers"]) * inter)
                own = manifest["n_terms"]
                for n in sorted({own, *(int(t) for t in args.terms.split(",") if t and int(t) < own)}):
                    set_terms(released, n)
                    for name, ids in sources.items():
                        with guard_counts(released) as counts:
                            got = greedy(released, ids, args.new_tokens)
                        same = got == refs[name]
                        fell = sum(c.fell_back for c in counts) / max(1, sum(c.evaluations for c in counts))
                        slow = (manifest["throttle"] or {}).get("slowdown") if n == own else None
                        rows.append((family, label, name, same.all(dim=1).float().mean().item(),
                                     same.float().mean().item(), fell, expanded, n, slow))
                        print(f"{family:5} {label:12} {name:7} N = {n:2} sequences identical {100 * rows[-1][3]:5.1f}%  "
                              f"tokens equal {100 * rows[-1][4]:6.2f}%  guard fallbacks {100 * fell:.4f}%  "
                              f"expanded {100 * expanded:.1f}% (default N = {own}, throttle "
                              f"{json.dumps(manifest['throttle'])}; protect {protect_s:.0f} s)", flush=True)
                shutil.rmtree(rel)
    print(f"\nmarkdown ({args.prompts} prompts x {args.new_tokens} new tokens, default protect options; N below "
          f"the default: orders <= N of the same release):")
    print("| family | checkpoint | prompts | sequences identical | tokens equal | guard fallbacks | expanded | N "
          "| measured slowdown |")
    print("|---|---|---|---|---|---|---|---|---|")
    for family, label, name, seq, tok, fell, exp, n, slow in rows:
        print(f"| {family} | {label} | {name} | {100 * seq:.1f}% | {100 * tok:.2f}% | {100 * fell:.4f}% | "
              f"{100 * exp:.1f}% | {n} | {'-' if slow is None else f'{slow:.2f}x'} |")


if __name__ == "__main__":
    main()
