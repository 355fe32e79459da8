"""What proving per-head units (the planned zkfp-fp/4, docs/fp4-plan.md) would cost, and whether
its terms fit the encoder's window: R1, R2 and R4 of the plan, measured.

    python benchmarks/fp4_rows.py [--runs 3] [--m-head 64 256] [--models DIR ...]

On the embedded model's Taylor release (zkfp.zoo.embedded; k = 16, 4 heads, 2 KV heads, 2 layers):

- rows: ezkl's `gen_settings` (circuits.pipeline.write_settings, at this machine's largest logrows,
  no proof) on today's terms circuit and whole encoder (the calibration: the golden file's figures),
  on the per-head terms graph (`circuits.graph.build_onnx(per_head=True)`) and on encoders of
  per-head units (`build_units_encoder_onnx`) of 1 to 4 heads, with and without the layer's MLP,
  for each `--m-head` (numbers a head's y has; the MLP's stays 64). Each graph `--runs` times: the
  distinct settings digests say whether ezkl lays it out the same every time (a verifier rebuilds
  the circuit and must get the prover's settings exactly).
- the per-head terms' standard deviations against circuits.spec.TERM_STD_RANGE (the window the
  encoder encodes exactly, measured on sums), for the embedded release and for every `--models`
  folder (each protected with taylor.protect first; per-head terms are smaller than the sums).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def release_terms(model_dir: Path, tmp: Path):
    """(shape, per-head terms) of a model's Taylor release, from the circuit's own graph."""
    import taylor
    from circuits.graph import reference_terms
    from circuits.inputs import Release, release_inputs, shape_of
    from fingerprint import spec

    rel_dir = tmp / f"rel-{model_dir.name}"
    if not rel_dir.exists():
        taylor.protect(model_dir, rel_dir)
    rel = Release(rel_dir)
    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    inputs = release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))
    return shape, reference_terms(shape, inputs, per_head=True)


def layout(onnx_model, part, tmp: Path, runs: int) -> tuple[int, int, float]:
    """(rows, distinct settings digests, seconds a run) of one graph."""
    import onnx

    from circuits.pipeline import max_logrows, settings_digest, write_settings

    path = tmp / "network.onnx"
    onnx.save(onnx_model, str(path))
    rows, digests, t = set(), set(), time.perf_counter()
    for _ in range(runs):
        s = write_settings(path, tmp / "settings.json", part, max_logrows())
        rows.add(int(s["num_rows"]))
        digests.add(settings_digest(s))
    if len(rows) > 1:
        return -1, len(digests), (time.perf_counter() - t) / runs
    return rows.pop(), len(digests), (time.perf_counter() - t) / runs


def term_stds(shape, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard deviations (each term's k² entries) of the per-head terms, of their sums over heads
    (today's M_a, M_b) and of the MLP terms."""
    kk, H = shape.k ** 2, shape.heads
    rows = terms.reshape(len(shape.layers), (2 * H + 1) * kk)
    heads = rows[:, :2 * H * kk].reshape(-1, H, 2, kk)
    return heads.std(axis=-1).reshape(-1), heads.sum(axis=1).std(axis=-1).reshape(-1), rows[:, 2 * H * kk:].std(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="gen_settings runs per graph")
    ap.add_argument("--m-head", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--models", nargs="*", default=[], help="more model folders for the term window")
    args = ap.parse_args()

    from circuits.graph import build_encoder_onnx, build_onnx, build_units_encoder_onnx
    from circuits.plan import Part
    from circuits.spec import TERM_STD_RANGE
    from fingerprint.spec import off_diagonal
    from zkfp.zoo import embedded

    with tempfile.TemporaryDirectory(prefix="zkfp-fp4-") as d:
        tmp = Path(d)
        shape, per_head = release_terms(embedded.path(), tmp)
        H, n = shape.heads, len(off_diagonal(shape.k))
        encoder = Part("encoder", shape, (tuple(range(shape.n_terms())),))
        print(f"embedded release: k = {shape.k}, {H} heads, {shape.kv_heads} KV heads, {len(shape.layers)} layers; "
              f"gen_settings {args.runs}× per graph")
        print(f"{'graph':<44} {'rows':>9} {'digests':>8} {'s/run':>6}")

        def report(name, model, part):
            rows, digests, secs = layout(model, part, tmp, args.runs)
            print(f"{name:<44} {rows if rows >= 0 else 'varies':>9} {digests:>8} {secs:>6.1f}", flush=True)

        report("today: terms (sums)", build_onnx(shape), Part("terms", shape))
        report("today: encoder, every layer (m = 64)", build_encoder_onnx(encoder), encoder)
        report("fp/4: terms, per head", build_onnx(shape, per_head=True), Part("terms", shape))
        g = np.random.default_rng(0)
        P_mlp = g.standard_normal((shape.m, n)) / n ** 0.5
        for m in args.m_head:
            P_head = g.standard_normal((m, 2 * n)) / (2 * n) ** 0.5
            for heads, mlp in [(1, False), (2, False), (4, False), (0, True), (1, True), (2, True), (4, True)]:
                units = ("head",) * heads + ("mlp",) * mlp
                what = " + ".join(x for x in (f"{heads} head{'s' * (heads > 1)}" * bool(heads), "MLP" * mlp) if x)
                report(f"fp/4: encoder of {what} (m_head = {m})",
                       build_units_encoder_onnx(shape, units, P_head, P_mlp), encoder)

        lo, hi = TERM_STD_RANGE
        print(f"\nterm standard deviations (the encoder's window: {lo:.3g} to {hi:.3g})")
        named = [("embedded", shape, per_head)] + [
            (Path(m).name, *release_terms(Path(m), tmp)) for m in args.models]
        for name, s, terms in named:
            head_std, sum_std, mlp_std = term_stds(s, terms)
            outside = int(((head_std < lo) | (head_std > hi)).sum())
            log2 = lambda x: f"2^{np.log2(x.min()):.1f} .. 2^{np.log2(x.max()):.1f}"  # noqa: E731
            print(f"{name:<24} heads {log2(head_std)} ({outside} of {head_std.size} outside), "
                  f"their sums {log2(sum_std)}, MLP {log2(mlp_std)}")


if __name__ == "__main__":
    main()
