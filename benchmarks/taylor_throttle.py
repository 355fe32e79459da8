"""Throttle of a Taylor release: slowdown against N and the expanded fraction, on shapes where
compute, not Python overhead, sets the time per token.

    python benchmarks/taylor_throttle.py [--reps 3] [--shapes 1024,7b]

1. Whole model, hidden 1024 (Llama, intermediate 2816, 4 layers, untrained: the ratio does not depend on
   training): protected at N = 32, then greedy decoding (batch 1) of the original and of the release with
   orders ≤ N, interleaved so both share the machine's noise (the fastest of --reps kept), for a few N, 1 thread. Beside each measured
   ratio, the one taylor.throttle predicts from its parts (what `zkfp protect --slowdown` uses), and the
   greedy agreement of the release's tokens with the original's.
2. Tables from taylor.throttle (the same code as `--slowdown`): slowdown for N × fraction at hidden 1024
   (4 layers) and on the Llama-2-7B shape (32 blocks of hidden 4096, intermediate 11008, vocabulary
   32000), with 1 thread and with all threads.
3. What `--slowdown 4` chooses on each shape.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from taylor.conversion import DEFAULT_FRACTION, protect  # noqa: E402
from taylor.release import MAX_TERMS  # noqa: E402
from taylor.throttle import ShapeTimer, choose  # noqa: E402
from zkfp.errors import ZkfpError  # noqa: E402
from zkfp.zoo.tiny import build, save, tiny_config  # noqa: E402

HIDDEN_1024 = dict(hidden=1024, layers=4, heads=16, kv_heads=4, intermediate=2816)
WHOLE_MODEL_TERMS = (12, 20, 28, 32)
TABLE_FRACTIONS = (0.5, DEFAULT_FRACTION, 0.9, 1.0)


def whole_model(reps: int, tokens: int = 16) -> None:
    from taylor.runtime import load_release, set_terms

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = build("llama", seed=0, **HIDDEN_1024)
        rel = protect(save(model, Path(tmp) / "ckpt"), Path(tmp) / "rel", n_terms=MAX_TERMS)
        released = load_release(rel)
        ids = torch.tensor([[5, 17, 42, 99, 3, 250]])

        def decode(m):
            start = time.perf_counter()
            with torch.no_grad():
                out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                 min_new_tokens=tokens, do_sample=False, pad_token_id=0)
            return (time.perf_counter() - start) / tokens, out[0, ids.shape[1]:]

        decode(model), decode(released)  # warm-up
        times = {"orig": [], **{n: [] for n in WHOLE_MODEL_TERMS}}
        agree = {}
        for _ in range(reps):
            for n in WHOLE_MODEL_TERMS:
                t, ref = decode(model)
                times["orig"].append(t)
                set_terms(released, n)
                t, out = decode(released)
                times[n].append(t)
                agree[n] = float((out == ref).float().mean())
        timer = ShapeTimer(model.config.to_dict())
        token, mlp = timer.token_s(), timer.mlp_s()
        t0 = min(times["orig"])
        print(f"\n1. whole model, Llama hidden 1024 (4 layers), fraction {DEFAULT_FRACTION:.2f}, 1 thread: "
              f"original {1e3 * t0:.1f} ms/token (parts' estimate {1e3 * token:.1f})")
        print("| N | ms/token | slowdown measured | slowdown from parts | greedy tokens equal |\n|---|---|---|---|---|")
        for n in WHOLE_MODEL_TERMS:
            t = min(times[n])
            predicted = 1 + 4 * (timer.taylor_s(n, DEFAULT_FRACTION) - mlp) / token
            print(f"| {n} | {1e3 * t:.1f} | {t / t0:.2f}x | {predicted:.2f}x | {100 * agree[n]:.0f} % |")


def table(label: str, config: dict, terms, threads: int) -> None:
    torch.set_num_threads(threads)
    timer = ShapeTimer(config)
    token, mlp = timer.token_s(), timer.mlp_s()
    layers = timer.arch.dims.layers
    print(f"\n2. {label}, {threads} thread(s): source {1e3 * token:.1f} ms/token, one MLP {1e3 * mlp:.2f} ms")
    print("| N | " + " | ".join(f"fraction {f:.2f}" for f in TABLE_FRACTIONS) + " |\n|---|"
          + "---|" * len(TABLE_FRACTIONS))
    for n in terms:
        row = [1 + layers * (timer.taylor_s(n, f) - mlp) / token for f in TABLE_FRACTIONS]
        print(f"| {n} | " + " | ".join(f"{s:.2f}x" for s in row) + " |")


def chosen(label: str, config: dict, target: float = 4.0) -> None:
    start = time.perf_counter()
    try:
        t = choose(config, target, fraction_ceiling=DEFAULT_FRACTION)
        print(f"3. {label}: --slowdown {target:g} chooses N = {t.n_terms}, fraction {t.fraction:.2f}, measured "
              f"{t.slowdown:.2f}x ({time.perf_counter() - start:.0f} s to measure)")
    except ZkfpError as exc:
        print(f"3. {label}: --slowdown {target:g} refused: {exc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shapes", default="1024,7b", help="which of 1024 (whole model and table) and 7b to measure")
    args = ap.parse_args()
    which = set(args.shapes.split(","))
    all_threads = torch.get_num_threads()
    shapes = []
    if "1024" in which:
        whole_model(args.reps)
        shapes.append(("Llama hidden 1024, 4 layers", tiny_config("llama", **HIDDEN_1024).to_dict(),
                       (4, 8, 12, 16, 20, 24, 28, 32)))
    if "7b" in which:
        from shapes import llama_config

        # taylor.throttle times a pool of ≤ 512 MiB of distinct Θ_n, so N = 32 fits in memory here too
        shapes.append(("Llama-2-7B shape (32 blocks)", llama_config("llama-2-7b"), (4, 12, 20, 28, 32)))
    for label, config, terms in shapes:
        for threads in sorted({1, all_threads}):
            table(label, config, terms, threads)
    torch.set_num_threads(1)
    for label, config, _ in shapes:
        chosen(label, config)


if __name__ == "__main__":
    main()
