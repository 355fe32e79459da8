"""Proof cost of the whole fingerprint circuit vs the naive HuRef export, per hidden size.

    python benchmarks/proof_cost.py [--hidden 32 64 128] [--tokens 16] [--out DIR]

For each hidden size: a tiny Llama (2 KV heads, intermediate ≈ 2.7·hidden, 4 layers, last 2
fingerprinted) is protected with taylor.protect; then the zkfp circuit is built (export +
settings + compile), set up, proved and verified (warm: the key cached; cold: a fresh cache, so
the verifier rebuilds the circuit and derives the key), each heavy step in its own subprocess so
its peak RSS is measured. The naive baseline is X̂·W_q·W_kᵀ·X̂ᵀ of one layer exported as is, with
ezkl's default settings and default calibration, on the same machine in the same run.
Prints a table (and writes results.json under --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_step(step: str, *args: str) -> tuple[dict, float, float]:
    """Run one step in a child; return (its JSON result, wall seconds, peak RSS GB)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--step", step, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise RuntimeError(f"step {step} failed (status {status})")
    return json.loads(out.decode().strip().splitlines()[-1]), wall, usage.ru_maxrss / 1e6


def proof_bytes(path: Path) -> int:
    p = json.loads(Path(path).read_text())["proof"]
    return len(p) if isinstance(p, list) else len(bytes.fromhex(p.removeprefix("0x")))


# -- steps (run in children) ------------------------------------------------------------------
def step_make(hidden: str, out: str) -> dict:
    import taylor
    from zkfp.zoo.tiny import make_trained

    inter = int(round(2.6875 * int(hidden)))
    src = make_trained("llama", Path(out) / "src", seed=1, steps=5, hidden=int(hidden), layers=4,
                       heads=4, kv_heads=2, intermediate=inter)
    rel = taylor.protect(src, Path(out) / "release", force=True)
    return {"release": str(rel)}


def _ctx(release: str):
    from circuits.inputs import Release, release_inputs, shape_of
    from fingerprint import spec

    rel = Release(release)
    shape = shape_of(rel, spec.K_TOKENS, spec.N_LAYERS, spec.M_DIM)
    return shape, release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))


def step_compile(release: str) -> dict:
    from circuits import pipeline

    shape, inputs = _ctx(release)
    c = pipeline.build(shape, inputs)
    s = c.settings_json()
    return {"folder": str(c.folder), "logrows": s["run_args"]["logrows"], "rows": s["num_rows"],
            "assignments": s["total_assignments"], "weights": shape.weight_elements(),
            "estimate": shape.estimate_rows()}


def step_srs(logrows: str) -> dict:
    from circuits.srs import dev_srs

    return {"srs": str(dev_srs(int(logrows)).path)}


def step_setup(release: str, srs: str) -> dict:
    from circuits import pipeline
    from circuits.srs import srs_file

    shape, inputs = _ctx(release)
    c = pipeline.build(shape, inputs)
    k = pipeline.keys(c, srs_file(srs))
    return {"keys": str(k.folder)}


def step_prove(release: str, out: str, srs: str) -> dict:
    from prover.prove import prove

    t: dict = {}
    prove(release, out, srs=srs, progress=False, force=True, timings=t)
    return {"bundle": out, **t}


def step_verify(bundle: str, release: str, srs: str) -> dict:
    from verifier.verify import verify_bundle

    t = time.perf_counter()
    r = verify_bundle(bundle, release, srs=srs, allow_dev_srs=True)
    total = time.perf_counter() - t
    import ezkl

    t = time.perf_counter()
    ezkl.verify(proof_path=str(Path(bundle) / "proof.json"), settings_path=str(Path(bundle) / "settings.json"),
                vk_path=str(Path(bundle) / "vk.key"), srs_path=srs)
    return {"ok": r.ok, "reasons": r.reasons, "verify_bundle_s": total, "ezkl_verify_s": time.perf_counter() - t}


def step_verify_cold(bundle: str, release: str, srs: str, cache: str) -> dict:
    """A third party's first verification: empty cache, so the verifier rebuilds the circuit and
    derives the key itself before checking the proof."""
    os.environ["ZKFP_CACHE"] = cache
    from verifier.verify import verify_bundle

    t = time.perf_counter()
    r = verify_bundle(bundle, release, srs=srs, allow_dev_srs=True)
    return {"ok": r.ok, "key": r.checks.get("key"), "verify_cold_s": time.perf_counter() - t}


def step_naive(hidden: str, out: str, phase: str, srs: str = "") -> dict:
    import ezkl

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    h, k = int(hidden), 16
    if phase == "calibrate":
        import torch

        class Naive(torch.nn.Module):
            def forward(self, X, wq, wk):
                return X @ wq.t() @ wk @ X.t()

        g = torch.Generator().manual_seed(0)
        inp = [torch.randn(k, h, generator=g) * 0.03, torch.randn(h, h, generator=g) * 0.06,
               torch.randn(h, h, generator=g) * 0.06]
        torch.onnx.export(Naive(), tuple(inp), str(d / "n.onnx"), opset_version=17, dynamo=False)
        (d / "in.json").write_text(json.dumps({"input_data": [t.reshape(-1).tolist() for t in inp]}))
        ezkl.gen_settings(str(d / "n.onnx"), str(d / "s.json"))
        t = time.perf_counter()
        ezkl.calibrate_settings(str(d / "in.json"), str(d / "n.onnx"), str(d / "s.json"), "resources")
        cal = time.perf_counter() - t
        ezkl.compile_circuit(str(d / "n.onnx"), str(d / "n.compiled"), str(d / "s.json"))
        s = json.loads((d / "s.json").read_text())
        return {"logrows": s["run_args"]["logrows"], "rows": s["num_rows"], "calibrate_s": cal,
                "weights": 2 * h * h}
    if phase == "setup":
        ezkl.setup(str(d / "n.compiled"), str(d / "vk.key"), str(d / "pk.key"), srs_path=srs)
        return {}
    if phase == "prove":
        ezkl.gen_witness(str(d / "in.json"), str(d / "n.compiled"), str(d / "w.json"))
        t = time.perf_counter()
        ezkl.prove(witness=str(d / "w.json"), model=str(d / "n.compiled"), pk_path=str(d / "pk.key"),
                   proof_path=str(d / "p.json"), srs_path=srs)
        return {"prove_s": time.perf_counter() - t}
    if phase == "verify":
        t = time.perf_counter()
        ezkl.verify(proof_path=str(d / "p.json"), settings_path=str(d / "s.json"), vk_path=str(d / "vk.key"), srs_path=srs)
        return {"verify_s": time.perf_counter() - t, "proof_bytes": proof_bytes(d / "p.json")}
    raise ValueError(phase)


STEPS = {"make": step_make, "compile": step_compile, "srs": step_srs, "setup": step_setup,
         "prove": step_prove, "verify": step_verify, "verify_cold": step_verify_cold, "naive": step_naive}


# -- driver ------------------------------------------------------------------------------------
def measure(hidden: int, root: Path) -> dict:
    row: dict = {"hidden": hidden}
    d = root / f"h{hidden}"
    rel = run_step("make", str(hidden), str(d))[0]["release"]
    res, wall, rss = run_step("compile", rel)
    row.update(ours_logrows=res["logrows"], ours_rows=res["rows"], ours_weights=res["weights"],
               ours_compile_s=wall, ours_estimate=res["estimate"])
    srs = run_step("srs", str(res["logrows"]))[0]["srs"]
    _, wall, rss = run_step("setup", rel, srs)
    row.update(ours_setup_s=wall, ours_setup_gb=rss)
    res, wall, rss = run_step("prove", rel, str(d / "bundle"), srs)
    row.update(ours_prove_s=res["prove_s"], ours_prove_total_s=wall, ours_prove_gb=rss, cosine=res["cosine"])
    row["ours_proof_bytes"] = proof_bytes(d / "bundle" / "proof.json")
    res, _, _ = run_step("verify", str(d / "bundle"), rel, srs)
    row.update(ours_verify_bundle_s=res["verify_bundle_s"], ours_ezkl_verify_s=res["ezkl_verify_s"], ours_ok=res["ok"])
    res, _, rss = run_step("verify_cold", str(d / "bundle"), rel, srs, str(d / "verifier-cache"))
    row.update(ours_verify_cold_s=res["verify_cold_s"], ours_verify_cold_gb=rss, ours_cold_ok=res["ok"])
    # naive baseline
    nd = str(d / "naive")
    res, wall, _ = run_step("naive", str(hidden), nd, "calibrate")
    row.update(naive_logrows=res["logrows"], naive_rows=res["rows"], naive_weights=res["weights"],
               naive_calibrate_s=res["calibrate_s"])
    nsrs = run_step("srs", str(res["logrows"]))[0]["srs"]
    _, wall, rss = run_step("naive", str(hidden), nd, "setup", nsrs)
    row.update(naive_setup_s=wall, naive_setup_gb=rss)
    res, wall, rss = run_step("naive", str(hidden), nd, "prove", nsrs)
    row.update(naive_prove_s=res["prove_s"], naive_prove_gb=rss)
    res, _, _ = run_step("naive", str(hidden), nd, "verify", nsrs)
    row.update(naive_verify_s=res["verify_s"], naive_proof_bytes=res["proof_bytes"])
    row["ours_rows_per_weight"] = row["ours_rows"] / row["ours_weights"]
    row["naive_rows_per_weight"] = row["naive_rows"] / row["naive_weights"]
    row["ours_prove_s_per_kweight"] = 1000 * row["ours_prove_s"] / row["ours_weights"]
    row["naive_prove_s_per_kweight"] = 1000 * row["naive_prove_s"] / row["naive_weights"]
    return row


def table(rows: list[dict]) -> str:
    cols = [("hidden", "hidden"), ("logrows", "ours_logrows"), ("rows", "ours_rows"), ("weights", "ours_weights"),
            ("rows/w", "ours_rows_per_weight"), ("setup s", "ours_setup_s"), ("prove s", "ours_prove_s"),
            ("peak GB", "ours_prove_gb"), ("proof B", "ours_proof_bytes"), ("verify s", "ours_ezkl_verify_s"),
            ("bundle s", "ours_verify_bundle_s"), ("first verify s", "ours_verify_cold_s"), ("naive k", "naive_logrows"), ("naive rows/w", "naive_rows_per_weight"),
            ("naive setup s", "naive_setup_s"), ("naive prove s", "naive_prove_s"), ("naive GB", "naive_prove_gb"),
            ("naive verify s", "naive_verify_s")]
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k, "—")) for _, k in cols) + " |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--step":
        print(json.dumps(STEPS[sys.argv[2]](*sys.argv[3:])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "zkfp-proof-cost"))
    args = ap.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ZKFP_CACHE", str(root / "cache"))  # cold cache: setup is measured
    rows = []
    for h in args.hidden:
        rows.append(measure(h, root))
        (root / "results.json").write_text(json.dumps(rows, indent=1))
        print(table(rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
