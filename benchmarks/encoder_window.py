"""Which term scales the encoder circuit encodes exactly (the window in circuits.spec.TERM_STD_RANGE).

    python benchmarks/encoder_window.py [EXPONENTS ...]   (default: -30 -28 -26 -12 0 8 10 12 14)

The embedded model's terms (its Taylor release, the terms graph in float) are rescaled so every
term has standard deviation 1.37·2^e, quantised as the terms circuit commits them (M·2^60), and
fed to the spec's encoder circuit (ezkl gen_witness, then ezkl.mock, which checks every
constraint). Prints, per e, max |v − float v|, max |check − 1| and whether the constraints hold.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(exponents: list[int]) -> None:
    import ezkl

    import taylor
    from circuits import pipeline
    from circuits.finish import BN254_R, inverse_sigmas, v_from_public, v_from_terms
    from circuits.graph import reference_terms
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.plan import make_plan
    from circuits.projection import load_projection
    from fingerprint import spec
    from zkfp.zoo import embedded

    work = Path(tempfile.mkdtemp(prefix="zkfp-encoder-window-"))
    rel = Release(taylor.protect(embedded.path(), work / "release"))
    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    terms = reference_terms(shape, release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k)))
    stds = terms.reshape(shape.n_terms(), -1).std(axis=1)
    print("embedded model's term standard deviations:", np.round(stds, 6).tolist())
    plan = make_plan(shape, pipeline.logrows_for(shape))
    encoder = pipeline.build(plan.chunks[-1].part, plan.logrows)
    scale = encoder.settings_json()["model_output_scales"][0]
    P = load_projection(shape.k, shape.m)
    for e in exponents:
        M = terms / np.repeat(stds, shape.k ** 2) * 2.0 ** e * 1.37
        felts = [(int(round(x * 2.0 ** 60)) % BN254_R).to_bytes(32, "little").hex() for x in M]
        (work / "in.json").write_text(json.dumps({"input_data": [felts, np.sqrt(inverse_sigmas(felts, shape)).tolist()]}))
        w = ezkl.gen_witness(str(work / "in.json"), str(encoder.compiled), str(work / "w.json"))
        v, checks = v_from_public([ezkl.felt_to_float(f, scale) for f in w["outputs"][0]], shape)
        try:
            ezkl.mock(str(work / "w.json"), str(encoder.compiled))
            holds = "constraints hold"
        except BaseException:  # noqa: BLE001 - pyo3 panics are BaseExceptions
            holds = "CONSTRAINTS FAIL"
        print(f"std 1.37·2^{e:>3}: max|v - float v| {np.abs(v - v_from_terms(M, shape, P)).max():.2e}  "
              f"max|check - 1| {np.abs(checks - 1).max():.2e}  {holds}", flush=True)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [-30, -28, -26, -12, 0, 8, 10, 12, 14])
