"""Proof cost of the fingerprint's two linked circuits (terms + encoder), per hidden size.

    python benchmarks/proof_cost.py [--hidden 32 64 128] [--out DIR] [--naive]

For each hidden size: a tiny Llama (2 KV heads, intermediate ≈ 2.7·hidden, 4 layers, last 2
fingerprinted) is protected with taylor.protect; then both circuits are built (export + settings
+ compile), set up, proved and verified, each heavy step in its own subprocess so its peak RSS is
measured: verification without the release (keys cached), against the release (keys cached;
dominated by committing the release tensors), and cold (a fresh cache: the verifier rebuilds the
circuits and derives the keys). Fingerprint extraction of the same release (fingerprint.extract,
the float path) is timed beside it. `--naive` adds the naive baseline of issue 4: X̂·W_q·W_kᵀ·X̂ᵀ
of one layer exported as is, with ezkl's defaults and calibration.
Prints a table (and writes results.json under --out). The figures of the single-circuit design
this replaced (terms public) come from the same script at commit 8cf598d.
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
    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    return shape, release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))


def _plan(shape):
    from circuits import pipeline
    from circuits.plan import make_plan

    return make_plan(shape, pipeline.logrows_for(shape))


def step_compile(release: str) -> dict:
    from circuits import pipeline

    shape, _ = _ctx(release)
    plan = _plan(shape)
    logrows = plan.logrows
    rows: dict[str, int] = {}  # the largest circuit of each kind
    for part in plan.parts.values():
        n = pipeline.build(part, logrows).settings_json()["num_rows"]
        rows[part.kind] = max(n, rows.get(part.kind, 0))
    return {"logrows": logrows, "rows": rows["terms"], "encoder_rows": rows["encoder"],
            "weights": shape.weight_elements(), "estimate": shape.estimate_rows()}


def step_srs(logrows: str) -> dict:
    from circuits.srs import dev_srs

    return {"srs": str(dev_srs(int(logrows)).path)}


def step_setup(release: str, srs: str) -> dict:
    from circuits import pipeline
    from circuits.srs import srs_file

    shape, _ = _ctx(release)
    plan = _plan(shape)
    for part in plan.parts.values():
        pipeline.keys(pipeline.build(part, plan.logrows), srs_file(srs))
    return {}


def step_prove(release: str, out: str, srs: str) -> dict:
    from prover.prove import prove

    t: dict = {}
    prove(release, out, srs=srs, progress=False, force=True, timings=t)
    return {"bundle": out, **t}


def step_verify(bundle: str, release: str, srs: str) -> dict:
    from verifier.commit import commit_release
    from verifier.verify import verify_bundle

    t = time.perf_counter()
    alone = verify_bundle(bundle, None, srs=srs, allow_dev_srs=True)
    alone_s = time.perf_counter() - t
    t = time.perf_counter()
    r = verify_bundle(bundle, release, srs=srs, allow_dev_srs=True)
    with_release_s = time.perf_counter() - t
    t = time.perf_counter()
    commit_release(release, srs)
    commit_s = time.perf_counter() - t
    return {"ok": r.ok and alone.ok, "reasons": r.reasons + alone.reasons, "verify_alone_s": alone_s,
            "verify_release_s": with_release_s, "commit_s": commit_s}


def step_extract(release: str) -> dict:
    from fingerprint.extract import extract

    t = time.perf_counter()
    extract(release)
    return {"extract_s": time.perf_counter() - t}


def step_verify_cold(bundle: str, release: str, srs: str, cache: str) -> dict:
    """A third party's first verification: empty cache, so the verifier rebuilds the circuit and
    derives the key itself before checking the proof."""
    os.environ["ZKFP_CACHE"] = cache
    from verifier.verify import verify_bundle

    t = time.perf_counter()
    r = verify_bundle(bundle, None, srs=srs, allow_dev_srs=True)
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


STEPS = {"make": step_make, "compile": step_compile, "srs": step_srs, "setup": step_setup, "prove": step_prove,
         "verify": step_verify, "verify_cold": step_verify_cold, "extract": step_extract, "naive": step_naive}


# -- driver ------------------------------------------------------------------------------------
def measure(hidden: int, root: Path, naive: bool) -> dict:
    row: dict = {"hidden": hidden}
    d = root / f"h{hidden}"
    rel = run_step("make", str(hidden), str(d))[0]["release"]
    res, wall, rss = run_step("compile", rel)
    row.update(logrows=res["logrows"], terms_rows=res["rows"], encoder_rows=res["encoder_rows"],
               weights=res["weights"], compile_s=wall, estimate=res["estimate"])
    srs = run_step("srs", str(res["logrows"]))[0]["srs"]
    _, wall, rss = run_step("setup", rel, srs)
    row.update(setup_s=wall, setup_gb=rss)
    res, wall, rss = run_step("prove", rel, str(d / "bundle"), srs)
    row.update(prove_s=res["prove_s"], prove_total_s=wall, prove_gb=rss, cosine=res["cosine"])
    b = d / "bundle"
    row.update(terms_proof_bytes=proof_bytes(b / "terms.proof.json"), encoder_proof_bytes=proof_bytes(b / "encoder.proof.json"),
               bundle_bytes=sum(p.stat().st_size for p in b.iterdir()))
    res, _, _ = run_step("verify", str(b), rel, srs)
    row.update(verify_alone_s=res["verify_alone_s"], verify_release_s=res["verify_release_s"],
               commit_s=res["commit_s"], ok=res["ok"])
    row["extract_s"] = run_step("extract", rel)[0]["extract_s"]
    res, _, rss = run_step("verify_cold", str(b), rel, srs, str(d / "verifier-cache"))
    row.update(verify_cold_s=res["verify_cold_s"], verify_cold_gb=rss, cold_ok=res["ok"])
    row["prove_ms_per_weight"] = 1000 * row["prove_s"] / row["weights"]
    if naive:
        nd = str(d / "naive")
        res, wall, _ = run_step("naive", str(hidden), nd, "calibrate")
        row.update(naive_logrows=res["logrows"], naive_weights=res["weights"])
        nsrs = run_step("srs", str(res["logrows"]))[0]["srs"]
        _, wall, rss = run_step("naive", str(hidden), nd, "setup", nsrs)
        res, wall, rss = run_step("naive", str(hidden), nd, "prove", nsrs)
        row.update(naive_prove_s=res["prove_s"], naive_prove_gb=rss)
        row["naive_prove_ms_per_weight"] = 1000 * row["naive_prove_s"] / row["naive_weights"]
    return row


def table(rows: list[dict]) -> str:
    cols = [("hidden", "hidden"), ("logrows", "logrows"), ("terms rows", "terms_rows"),
            ("encoder rows", "encoder_rows"), ("weights", "weights"), ("setup s", "setup_s"),
            ("prove s (both)", "prove_s"), ("prove ms/weight", "prove_ms_per_weight"), ("peak GB", "prove_gb"),
            ("proof B (terms+enc)", "proof_b"), ("bundle KB", "bundle_kb"), ("verify s, no release", "verify_alone_s"),
            ("verify s, release", "verify_release_s"), ("commit s", "commit_s"), ("extract s", "extract_s"),
            ("first verify s", "verify_cold_s"), ("cosine", "cosine"), ("ok", "ok")]
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        r = dict(r, proof_b=f"{r['terms_proof_bytes']}+{r['encoder_proof_bytes']}", bundle_kb=r["bundle_bytes"] / 1e3)
        lines.append("| " + " | ".join(fmt(r.get(k, "—")) for _, k in cols) + " |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--step":
        print(json.dumps(STEPS[sys.argv[2]](*sys.argv[3:])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "zkfp-proof-cost"))
    ap.add_argument("--naive", action="store_true", help="also measure the naive single-term export")
    args = ap.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ZKFP_CACHE", str(root / "cache"))  # cold cache: setup is measured
    rows = []
    for h in args.hidden:
        rows.append(measure(h, root, args.naive))
        (root / "results.json").write_text(json.dumps(rows, indent=1))
        print(table(rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
