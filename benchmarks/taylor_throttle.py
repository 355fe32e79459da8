"""Throttle of a Taylor release at a size where compute, not Python overhead, dominates a token.

Builds an untrained Llama (hidden 1024, intermediate 2816, 4 layers by default; the ratio does
not depend on training or on the layer count), protects it with N = 20 and, batch 1,
torch.set_num_threads(1), times greedy decoding of the original and of the release with orders
≤ N for N = 2..12, 16, 20, interleaved so both share the machine's noise. Also prints the release size
ratio and the ratio predicted from the weights each token has to read.

    python benchmarks/taylor_throttle.py [--hidden 1024 --intermediate 2816 --layers 4 --reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()

    from taylor.conversion import DEFAULT_FRACTION, protect
    from taylor.runtime import load_release, set_terms
    from zkfp.zoo.tiny import build, save

    terms = list(range(2, 13, 2)) + [16, 20]  # beyond 12: where the ≥4x goal would be reached
    with tempfile.TemporaryDirectory() as tmp:
        model = build("llama", seed=0, hidden=args.hidden, layers=args.layers, heads=16, kv_heads=4,
                      intermediate=args.intermediate)
        ckpt = save(model, Path(tmp) / "ckpt")
        rel = protect(ckpt, Path(tmp) / "rel", n_terms=max(terms))
        released = load_release(rel)
        size = lambda p: sum(f.stat().st_size for f in Path(p).glob("*.safetensors"))  # noqa: E731
        torch.set_num_threads(1)
        ids = torch.tensor([[5, 17, 42, 99, 3, 250]])

        def per_token(m):
            start = time.perf_counter()
            with torch.no_grad():
                m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                           min_new_tokens=args.tokens, do_sample=False, pad_token_id=0)
            return (time.perf_counter() - start) / args.tokens

        per_token(model), per_token(released)  # warm-up
        times = {"orig": [], **{n: [] for n in terms}}
        for _ in range(args.reps):
            for n in terms:
                times["orig"].append(per_token(model))
                set_terms(released, n)
                times[n].append(per_token(released))
        t0 = statistics.median(times["orig"])
        d, inter = args.hidden, args.intermediate
        attn = sum(p.numel() for n, p in model.named_parameters() if "self_attn" in n) / args.layers
        s = round(DEFAULT_FRACTION * inter)
        print(f"llama hidden {d}, intermediate {inter}, {args.layers} layers, fraction {DEFAULT_FRACTION:.3f}; "
              f"checkpoint {size(ckpt) / 2**20:.0f} MiB, release N={max(terms)} {size(rel) / 2**20:.0f} MiB")
        print(f"{'N':>4} {'ms/token':>9} {'throttle':>9} {'weights read ratio':>19}")
        print(f"{'orig':>4} {1e3 * t0:9.1f} {'1.00x':>9}")
        for n in terms:
            t = statistics.median(times[n])
            mlp = 3 * d * inter
            taylor_mlp = 2 * d * s + (n + 1) * d * s + 3 * d * (inter - s)
            predicted = (attn + taylor_mlp) / (attn + mlp)
            print(f"{n:>4} {1e3 * t:9.1f} {t / t0:8.2f}x {predicted:18.2f}x")


if __name__ == "__main__":
    main()
