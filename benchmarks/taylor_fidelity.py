"""Fidelity and throttle of Taylor releases versus N, on briefly trained tiny models of both MLP families.

For each family (llama: gated SiLU; gpt2: GELU), train a tiny model, protect it once with N = 12
and evaluate orders ≤ N for N = 2, 4, ..., 12 (identical to a release made with that N: the
coefficients of orders ≤ N and the guard do not depend on the maximum N). Reports
  * greedy agreement over P prompts × K new tokens (sequences identical; tokens equal),
  * the max |logit| error, teacher-forced on the original's continuations,
  * the throttle: time per generated token of the release / the original's, batch 1,
    torch.set_num_threads(1), original and release runs interleaved so they share the noise.

    python benchmarks/taylor_fidelity.py [--steps 400] [--prompts 50] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def prompts(n: int, length: int, seed: int = 99) -> torch.Tensor:
    from zkfp.zoo.corpus import DOMAINS, generate
    from zkfp.zoo.tiny import encode

    out = []
    for line in generate(sorted(DOMAINS), n_sentences=20 * n, seed=seed).splitlines():
        ids = encode(line)
        if len(ids) >= length:
            out.append(ids[:length])
        if len(out) == n:
            break
    return torch.stack(out)


def greedy(model, ids: torch.Tensor, k: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k,
                              do_sample=False, pad_token_id=0)[:, ids.shape[1]:]


def per_token_seconds(model, ids: torch.Tensor, k: int) -> float:
    start = time.perf_counter()
    greedy(model, ids, k)
    return (time.perf_counter() - start) / k


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--families", default="llama,gpt2")
    ap.add_argument("--timing-reps", type=int, default=5)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from taylor.conversion import protect
    from taylor.runtime import load_release, set_terms
    from zkfp.zoo.tiny import make_trained

    terms = list(range(2, 13, 2))
    batch = prompts(args.prompts, 6)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            torch.set_num_threads(2)
            t0 = time.perf_counter()
            ckpt = make_trained(family, Path(tmp) / family, seed=3, domain=["forest", "kitchen", "harbor"],
                                steps=args.steps, layers=4)
            train_s = time.perf_counter() - t0
            rel = protect(ckpt, Path(tmp) / f"{family}-rel", n_terms=max(terms))
            original = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
            released = load_release(rel)
            ref = greedy(original, batch, args.new_tokens)
            full = torch.cat([batch, ref], dim=1)
            with torch.no_grad():
                ref_logits = original(full).logits
            print(f"\n{family}: trained {args.steps} steps in {train_s:.0f} s; {args.prompts} prompts x "
                  f"{args.new_tokens} new tokens")
            fid = {}
            for n in terms:
                set_terms(released, n)
                got = greedy(released, batch, args.new_tokens)
                with torch.no_grad():
                    err = (released(full).logits - ref_logits).abs().max().item()
                fid[n] = ((got == ref).all(dim=1).float().mean().item(), (got == ref).float().mean().item(), err)
            # throttle, batch 1, single thread, interleaved
            torch.set_num_threads(1)
            one = batch[:1]
            k = 32
            greedy(original, one, 4), greedy(released, one, 4)  # warm-up
            times = {"orig": [], **{n: [] for n in terms}}
            for _ in range(args.timing_reps):
                for n in terms:
                    times["orig"].append(per_token_seconds(original, one, k))
                    set_terms(released, n)
                    times[n].append(per_token_seconds(released, one, k))
            t_orig = statistics.median(times["orig"])
            print(f"{'N':>3} {'seq agree':>10} {'tok agree':>10} {'max|dlogit|':>12} {'ms/token':>9} {'throttle':>9}")
            print(f"{'orig':>4} {'':>10} {'':>10} {'':>12} {1e3 * t_orig:9.2f} {'1.00x':>9}")
            for n in terms:
                seq, tok, err = fid[n]
                t = statistics.median(times[n])
                rows.append((family, n, seq, tok, err, t / t_orig))
                print(f"{n:>3} {100 * seq:9.1f}% {100 * tok:9.2f}% {err:12.2e} {1e3 * t:9.2f} {t / t_orig:8.2f}x")
    print("\nmarkdown:\n| family | N | sequences identical | tokens equal | max abs logit error | throttle |")
    print("|---|---|---|---|---|---|")
    for family, n, seq, tok, err, thr in rows:
        print(f"| {family} | {n} | {100 * seq:.1f}% | {100 * tok:.2f}% | {err:.2e} | {thr:.2f}x |")


if __name__ == "__main__":
    main()
