"""Conversion time and peak memory on a few-hundred-MB checkpoint, and the audit on its release.

Builds an untrained Llama (hidden 1024, 12 layers, intermediate 2816 by default) with zkfp.zoo in
a temp dir, then, each step in a fresh subprocess so its peak RSS (VmHWM) is its own:
  baseline   import torch + transformers + taylor, nothing else
  calibrate  the streamed calibration (one block at a time through a one-block shell)
  convert    the streaming conversion, from saved calibration statistics
  audit      the algebraic inversion of every layer, compared with the original
and compares with the checkpoint's size and its largest layer's.

    python benchmarks/taylor_conversion.py [--hidden 1024 --layers 12 --intermediate 2816 --terms 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CHILD = textwrap.dedent("""
    import json, sys, time
    import torch, transformers, taylor.conversion, taylor.audit
    step, ckpt, work, terms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(1)
    start = time.perf_counter()
    extra = {}
    if step == "calibrate":
        taylor.conversion.calibrate(ckpt).save(work + "/calib.npz")
    elif step == "convert":
        from taylor.conversion import Calibration, convert
        convert(ckpt, work + "/release", Calibration.load(work + "/calib.npz"), n_terms=terms, force=True)
    elif step == "audit":
        r = taylor.audit.audit(work + "/release", original=ckpt)
        extra = {"recovered": r.recovered_fraction, "fit": r.fit_fraction, "max_rel_error": r.max_rel_error,
                 "columns": r.expanded, "invert_s": r.seconds}
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": hwm / 1024, **extra}))
""")


def run_child(step: str, ckpt: Path, work: Path, terms: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, step, str(ckpt), str(work), str(terms)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--terms", type=int, default=12)
    args = ap.parse_args()

    from zkfp.zoo.tiny import build, save

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model = build("llama", seed=0, hidden=args.hidden, layers=args.layers, heads=16, kv_heads=4,
                      intermediate=args.intermediate)
        ckpt = save(model, tmp / "ckpt", max_shard_size="200MB")
        del model
        build_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
        from zkfp.checkpoint import Checkpoint

        c = Checkpoint(ckpt)
        per_layer: dict[str, int] = {}
        for name in c.names:
            if ".layers." in name:
                key = name.split(".layers.")[1].split(".")[0]
                n = 1
                for s in c.shape(name):
                    n *= s
                per_layer[key] = per_layer.get(key, 0) + n * 4
        largest = max(per_layer.values())
        results = {step: run_child(step, ckpt, tmp, args.terms) for step in ("baseline", "calibrate", "convert", "audit")}
        rel_size = sum(p.stat().st_size for p in (tmp / "release").iterdir())
        print(f"checkpoint: llama hidden {args.hidden}, {args.layers} layers, intermediate {args.intermediate}, fp32, "
              f"built in {build_s:.0f} s")
        print(f"  size {size / 2**20:.0f} MiB in {len(c.files())} shards; largest layer {largest / 2**20:.1f} MiB; "
              f"release (N={args.terms}) {rel_size / 2**20:.0f} MiB")
        base = results["baseline"]["peak_rss_mb"]
        print(f"{'step':<10} {'seconds':>8} {'peak RSS MiB':>13} {'above baseline':>15}")
        for step, r in results.items():
            print(f"{step:<10} {r['seconds']:8.1f} {r['peak_rss_mb']:13.0f} {r['peak_rss_mb'] - base:15.0f}")
        a = results["audit"]
        print(f"audit: {a['columns']} protected columns, recovered within 1e-3 of the original: "
              f"{100 * a['recovered']:.2f}%, worst layer rel. error {a['max_rel_error']:.1e}, inversion {a['invert_s']:.1f} s")


if __name__ == "__main__":
    main()
