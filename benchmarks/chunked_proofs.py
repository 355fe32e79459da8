"""Chunked proofs (circuits.plan) on real model shapes: what they cost here, and what they would cost elsewhere.

    python benchmarks/chunked_proofs.py end-to-end smollm2-135m   # protect, prove, verify a whole checkpoint
    python benchmarks/chunked_proofs.py per-chunk qwen2-0.5b      # setup and one proof per distinct circuit
    python benchmarks/chunked_proofs.py workers                   # the same chunked proof with 1 and 2 Ray workers
    python benchmarks/chunked_proofs.py per-weight [--against smollm2-135m]  # hidden 128's 2^19 circuit vs chunks
    python benchmarks/chunked_proofs.py project llama-3-8b --costs FILE.json [FILE.json ...]

Shapes are the published configs (benchmarks/shapes.py) with seeded weights: cost does not depend
on training. `end-to-end` writes the checkpoint as bf16 shards, protects it with the defaults,
proves it with `zkfp prove`'s library call (Ray, this machine), and verifies it without and with
the release. `per-chunk` lays out the spec's plan with ezkl and, for each distinct circuit, runs
its setup and one proof on inputs of the right shapes (random values: proving cost is the
same for any values), each in a fresh process whose peak RSS (VmHWM) is reported. `project`
multiplies measured per-circuit-kind costs by a plan's chunk counts. Every mode prints a table and
can write its measurements with --out FILE.json (the input of `project`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHUNK_LOGROWS = 18


def kind_of(chunk_name: str) -> str:
    """"l0.attn.g0.d0" → "attn", "l1.expanded.3" → "expanded", "sum0.2" → "sum", "encoder" and
    "encoder.l0-4" → "encoder", "terms"."""
    head, _, rest = chunk_name.partition(".")
    if head.startswith("sum"):
        return "sum"
    return head if head == "encoder" or not rest else rest.split(".")[0]


def weights_read(chunk) -> int:
    return chunk.part.shape.weight_elements() if chunk.part.kind == "terms" else 0


# -- one process per measured task --------------------------------------------------------------
def _in_fresh_process(fn, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _setup(part_json: dict, logrows: int, srs: str, sha: str) -> dict:
    from prover.tasks import setup_circuit

    return setup_circuit(part_json, logrows, srs, sha)


def _prove_synthetic(name: str, part_json: dict, logrows: int, srs: str, work: str) -> dict:
    """One proof of the circuit on random inputs of its shapes (committed partials as field elements)."""
    from circuits.finish import ints_to_felts
    from circuits.pipeline import input_json
    from circuits.plan import Part
    from prover.tasks import prove_chunk

    part = Part.from_json(part_json)
    rng = np.random.default_rng(0)
    path = Path(work) / f"{name}.input.json"
    if part.kind == "terms":
        path.write_text(input_json([rng.normal(0, 0.05, dims) for _, dims in part.shape.input_specs()]))
    else:
        io = part.committed_io()["inputs"]
        data = [ints_to_felts(rng.integers(-2 ** 40, 2 ** 40, int(np.prod(d))).tolist())
                for n, d in io if n.startswith("partial")]
        if part.kind == "encoder":
            data.append([2.0 ** -10] * part.shape.n_terms())
        path.write_text(json.dumps({"input_data": data}))
    return prove_chunk(name, part_json, logrows, srs, str(path), work)


def per_chunk(shape, logrows: int = CHUNK_LOGROWS, budget: int | None = None) -> dict:
    """The plan of `shape`, and the setup and one proof of each of its distinct circuits."""
    from circuits import pipeline
    from circuits.plan import make_plan
    from circuits.srs import dev_srs

    t = time.perf_counter()
    plan = make_plan(shape, logrows, budget)
    plan_s = time.perf_counter() - t
    info = dev_srs(logrows)
    circuits = {}
    with tempfile.TemporaryDirectory(prefix="zkfp-chunk-bench-") as work:
        for key, part in plan.parts.items():
            first = next(c for c in plan.chunks if c.part.key() == key)
            setup = _in_fresh_process(_setup, part.to_json(), logrows, str(info.path), info.sha256)
            proof = _in_fresh_process(_prove_synthetic, first.name.replace("/", "_"), part.to_json(), logrows,
                                      str(info.path), work)
            circuits[key] = {"kind": kind_of(first.name), "rows": pipeline.part_rows(part), "weights": weights_read(first),
                             "chunks": sum(c.part.key() == key for c in plan.chunks), **setup,
                             "prove_s": proof["prove_s"], "prove_peak_bytes": proof["peak_rss_bytes"],
                             "prove_threads": proof.get("threads", 2)}
            print(f"  {first.name:>20} ({circuits[key]['kind']}): {circuits[key]['rows']:,} rows, setup "
                  f"{setup['setup_s']:.0f} s, prove {proof['prove_s']:.0f} s, peak "
                  f"{proof['peak_rss_bytes'] / 2**30:.1f} GiB", flush=True)
    return {"logrows": logrows, "chunk_rows": plan.chunk_rows, "plan_s": plan_s, "chunks": len(plan.chunks),
            "weights": shape.weight_elements(), "circuits": circuits,
            "kinds": {k: sum(kind_of(c.name) == k for c in plan.chunks) for k in {kind_of(c.name) for c in plan.chunks}}}


def report_per_chunk(label: str, m: dict, workers: int = 1) -> None:
    cpu = sum(c["prove_s"] * c["chunks"] for c in m["circuits"].values())
    setup = sum(c["setup_s"] for c in m["circuits"].values())
    print(f"\n{label}: {m['chunks']} chunks at 2^{m['logrows']} rows ({m['kinds']}), {len(m['circuits'])} circuits, "
          f"plan laid out in {m['plan_s']:.0f} s")
    print("| circuit | rows | weights per chunk | chunks | setup s | prove s | peak GiB |\n|---|---|---|---|---|---|---|")
    for c in m["circuits"].values():
        print(f"| {c['kind']} | {c['rows']:,} | {c['weights']:,} | {c['chunks']} | {c['setup_s']:.0f} | "
              f"{c['prove_s']:.0f} | {c['prove_peak_bytes'] / 2**30:.1f} |")
    print(f"projected here: setup {setup / 60:.0f} min + proofs {cpu / 60:.0f} min (one at a time, 2 threads); "
          f"{1000 * cpu / m['weights']:.3f} ms of proving per weight read ({m['weights']:,} weights)")


# -- modes ------------------------------------------------------------------------------------
def end_to_end(name: str, workers: int | None, work: str | None = None) -> dict:
    """With `work`, the checkpoint, release and bundle-in-progress stay there, so an interrupted run resumes."""
    import taylor
    from prover import prove
    from shapes import llama_config, write_checkpoint
    from verifier import verify_bundle

    with tempfile.TemporaryDirectory(prefix="zkfp-e2e-") as scratch:
        tmp = Path(work or scratch)
        t = time.perf_counter()
        ckpt = tmp / "ckpt"
        if not (ckpt / "config.json").exists():
            write_checkpoint(ckpt, llama_config(name))
        write_s = time.perf_counter() - t
        t = time.perf_counter()
        rel = tmp / "release"
        if not (rel / "manifest.json").exists():
            rel = taylor.protect(ckpt, rel)
        protect_s = time.perf_counter() - t
        timings: dict = {}
        t = time.perf_counter()
        bundle = prove(rel, tmp / "bundle", dev_srs=True, timings=timings, workers=workers)
        wall = time.perf_counter() - t
        t = time.perf_counter()
        res = verify_bundle(bundle, allow_dev_srs=True)
        verify_s = time.perf_counter() - t
        assert res.ok, res.reasons
        t = time.perf_counter()
        res_rel = verify_bundle(bundle, rel, allow_dev_srs=True)
        verify_rel_s = time.perf_counter() - t
        assert res_rel.ok, res_rel.reasons
        bundle_bytes = sum(p.stat().st_size for p in Path(bundle).iterdir())
    out = {"model": name, "write_s": write_s, "protect_s": protect_s, "prove_wall_s": wall, "timings": timings,
           "verify_s": verify_s, "verify_checks": res.checks, "verify_release_s": verify_rel_s,
           "verify_release_checks": res_rel.checks, "bundle_bytes": bundle_bytes}
    plan = timings["plan"]
    print(f"\n{name}: checkpoint written {write_s:.0f} s, protected {protect_s:.0f} s; proved in {wall / 60:.1f} min "
          f"wall ({timings['workers']} workers): setup {timings['setup_s'] / 60:.1f} min for {timings['circuits']} "
          f"circuits, chunks {timings['prove_s'] / 60:.1f} min for {timings['chunks']} chunks at 2^{plan['logrows']}; "
          f"cosine to float v {timings['cosine']:.5f}")
    print("| circuit | setup s | rows | setup peak GiB |\n|---|---|---|---|")
    for key, c in timings["setup_costs"].items():
        print(f"| {key[:12]} | {c['setup_s']:.0f} | {c['rows']:,} | {c['peak_rss_bytes'] / 2**30:.1f} |")
    print("| chunk | prove s | peak GiB |\n|---|---|---|")
    for chunk, c in timings["chunk_costs"].items():
        if c:
            print(f"| {chunk} | {c['prove_s']:.0f} | {c['peak_rss_bytes'] / 2**30:.1f} |")
    print(f"verify without the release {verify_s:.1f} s ({res.checks.get('proofs_s')} s for the "
          f"{res.checks['proofs']} proofs), with it {verify_rel_s:.1f} s (commitments {res_rel.checks.get('commit_s')} s); "
          f"bundle {bundle_bytes / 1e6:.1f} MB")
    return out


def workers_compare() -> dict:
    """The embedded model cut into 8 chunks (60,000 rows each, at 2^16), proved with 1 and then 2 Ray workers
    after one warm-up run that pays the setup."""
    import taylor
    from prover import prove
    from zkfp.zoo import embedded

    out = {}
    with tempfile.TemporaryDirectory(prefix="zkfp-workers-") as tmp:
        tmp = Path(tmp)
        rel = taylor.protect(embedded.path(), tmp / "release")
        for label, workers in (("warm-up (setup)", 2), ("1 worker", 1), ("2 workers", 2)):
            timings: dict = {}
            t = time.perf_counter()
            prove(rel, tmp / f"b-{label}", dev_srs=True, progress=False, chunk_rows=60_000, workers=workers,
                  timings=timings)
            out[label] = {"wall_s": time.perf_counter() - t, "prove_s": timings["prove_s"], "setup_s": timings["setup_s"]}
            print(f"{label}: wall {out[label]['wall_s']:.0f} s (chunk proofs {timings['prove_s']:.0f} s, setup "
                  f"{timings['setup_s']:.0f} s)", flush=True)
    return out


def per_weight(against: str | None = None) -> dict:
    """Hidden 128 (the largest single circuit that proves here): its single 2^19 circuit (terms and
    encoder) against the spec's chunks at 2^18, per weight read: its own chunks, or with `against`
    the chunks of that real shape (benchmarks/shapes.py), whose chunks are full."""
    from circuits.spec import CircuitShape, LayerShape
    from taylor.conversion import DEFAULT_FRACTION

    h = 128
    inter = int(round(2.6875 * h))
    expanded = round(DEFAULT_FRACTION * inter)
    shape = CircuitShape.for_model(hidden=h, heads=4, kv_heads=2, head_dim=h // 4, intermediate=inter,
                                   layers=(LayerShape(expanded, inter - expanded),) * 2, activation="silu")
    single = per_chunk(shape, 19, (1 << 19) - 1024)
    report_per_chunk("hidden 128, one circuit at 2^19", single)
    if against:
        from shapes import circuit_shape

        chunked = per_chunk(circuit_shape(against), CHUNK_LOGROWS)
        report_per_chunk(f"{against}, chunks at 2^18", chunked)
    else:
        chunked = per_chunk(shape, CHUNK_LOGROWS)
        report_per_chunk("hidden 128, chunks at 2^18", chunked)
    cost = {k: sum(c["prove_s"] * c["chunks"] for c in m["circuits"].values()) / m["weights"]
            for k, m in (("single", single), ("chunked", chunked))}
    print(f"prove ms per weight: single {1000 * cost['single']:.3f}, chunked {1000 * cost['chunked']:.3f} "
          f"({cost['single'] / cost['chunked']:.2f}× cheaper chunked)")
    return {"single": single, "chunked": chunked}


def _measured_costs(files: list[str]) -> tuple[dict[str, list[dict]], list[float]]:
    """Per circuit kind, every measured chunk proof ({prove_s, peak, threads}); and every setup time.
    Reads `per-chunk` files (one synthetic proof per circuit, all CPUs) and `end-to-end` files (every
    chunk of a real proof; 1 thread per task where two ran at once, all CPUs for a lone task; runs
    older than the "threads" record count 1)."""
    kinds: dict[str, list[dict]] = {}
    setups: list[float] = []
    for f in files:
        m = json.loads(Path(f).read_text())
        for c in m.get("circuits", {}).values():
            kinds.setdefault(c["kind"], []).append(
                {"prove_s": c["prove_s"], "peak": c["prove_peak_bytes"], "threads": c.get("prove_threads", 2)})
            setups.append(c["setup_s"])
        timings = m.get("timings", {})
        for name, cost in (timings.get("chunk_costs") or {}).items():
            if not cost:
                continue
            kinds.setdefault(kind_of(name), []).append({"prove_s": cost["prove_s"], "peak": cost["peak_rss_bytes"],
                                               "threads": cost.get("threads", 1)})
        setups += [c["setup_s"] for c in (timings.get("setup_costs") or {}).values()]
    return kinds, setups


def project(name: str, costs_files: list[str], nodes: list[int], cores: int = 16, memory_gb: int = 128) -> None:
    """Chunks of `name`'s plan (laid out with ezkl) × the mean measured prove and setup time of each
    circuit kind at 2^18 (every chunk is a 2^18 circuit, and ezkl's proving cost follows the rows
    it lays out, so a kind's cost measured on one model's shape stands for the same kind on another's):
    CPU-hours, and wall time on N machines of `cores` cores and `memory_gb` GB, each running as many
    tasks as its cores and 80 % of its memory hold (tasks with the measured threads and peak memory)."""
    from circuits.plan import make_plan
    from shapes import circuit_shape

    kinds, setups = _measured_costs(costs_files)
    mean = {k: {f: float(np.mean([c[f] for c in v])) for f in ("prove_s", "peak", "threads")} for k, v in kinds.items()}
    plan = make_plan(circuit_shape(name), CHUNK_LOGROWS)
    counts = {k: sum(kind_of(c.name) == k for c in plan.chunks) for k in {kind_of(c.name) for c in plan.chunks}}
    missing = sorted(k for k in counts if k not in mean)
    if len(missing) == len(counts):
        raise SystemExit(f"no measured cost for any circuit kind of the plan ({sorted(counts)})")
    for k in missing:  # a kind not measured yet is counted at the mean of the measured ones (all are 2^18)
        mean[k] = {f: float(np.mean([m[f] for m in mean.values()])) for f in ("prove_s", "peak", "threads")}
        print(f"note: no measurement of a {k} chunk; counted at the mean of the measured 2^{CHUNK_LOGROWS} circuits")
    cpu_s = sum(mean[k]["prove_s"] * mean[k]["threads"] * n for k, n in counts.items())
    setup_s = float(np.mean(setups)) * len(plan.parts)
    threads = max(m["threads"] for m in mean.values())
    peak = max(m["peak"] for m in mean.values())
    per_machine = int(min(cores // threads, 0.8 * memory_gb * 2**30 // peak))
    print(f"{name}: {len(plan.chunks)} chunks at 2^{CHUNK_LOGROWS} ({counts}), {len(plan.parts)} circuits")
    print("measured per kind (this machine): " + ", ".join(
        f"{k} {m['prove_s']:.0f} s × {m['threads']:.0f} thread(s), {m['peak'] / 2**30:.1f} GiB" for k, m in mean.items()))
    print(f"CPU time: {cpu_s / 3600:.0f} CPU-hours of proofs + {setup_s / 3600:.1f} h of setup "
          f"({len(plan.parts)} circuits × {np.mean(setups) / 60:.0f} min)")
    for n in nodes:
        wall = setup_s / min(len(plan.parts), per_machine * n) + cpu_s / threads / (per_machine * n)
        print(f"  {n} × {cores}-core, {memory_gb} GB machines ({per_machine} tasks each): ~{wall / 3600:.1f} h wall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["end-to-end", "per-chunk", "workers", "per-weight", "project"])
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--costs", nargs="*", default=[])
    ap.add_argument("--nodes", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--out")
    ap.add_argument("--against", help="per-weight: compare with the chunks of this shape (e.g. smollm2-135m)")
    ap.add_argument("--work", help="end-to-end: keep the checkpoint, release and partial proofs here (resumable)")
    args = ap.parse_args()
    if args.mode == "end-to-end":
        result = end_to_end(args.model, args.workers, args.work)
    elif args.mode == "per-chunk":
        from shapes import circuit_shape

        result = per_chunk(circuit_shape(args.model))
        report_per_chunk(args.model, result)
    elif args.mode == "workers":
        result = workers_compare()
    elif args.mode == "per-weight":
        result = per_weight(args.against)
    else:
        project(args.model, args.costs, args.nodes)
        return
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
