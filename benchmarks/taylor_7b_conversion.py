"""`zkfp protect` (default options) on a checkpoint with Llama-2-7B's widths: time, peak RSS, release size.

    python benchmarks/taylor_7b_conversion.py [--layers 4] [--keep DIR]

Writes a bf16 Llama checkpoint with Llama-2-7B's tensor shapes (hidden 4096, intermediate 11008,
32 heads, vocabulary 32000) but only `--layers` blocks (memory is per block), seeded random
weights, sharded one safetensors file per block plus embeddings and head, with
`model.safetensors.index.json`. Then protects it in a fresh process with `taylor.protect`'s
defaults (at this width: N and fraction chosen for a measured 4× slowdown, random-id calibration)
and reports that process's peak RSS (VmHWM from /proc/self/status; ru_maxrss would carry the
forking parent's peak across exec; reset through /proc/self/clear_refs between the throttle
choice, calibration and conversion, so each has its own peak), the time of each, and the
release's size and file count. The temporary folder is deleted afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from shapes import CONFIGS, llama_config, write_checkpoint  # noqa: E402

HIDDEN, INTERMEDIATE = CONFIGS["llama-2-7b"]["hidden_size"], CONFIGS["llama-2-7b"]["intermediate_size"]


CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[3])
    import taylor.conversion as conversion
    import taylor.throttle as throttle
    ckpt, out = sys.argv[1], sys.argv[2]

    def status(key):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024

    figures = {"imports_rss_mib": status("VmRSS:"), "choose_s": 0.0, "choose_peak_mib": 0.0}

    def timed(stage, fn):  # protect() may choose the throttle, then calibrates, then converts
        def run(*args, **kw):
            start = time.perf_counter()
            result = fn(*args, **kw)
            figures[stage + "_s"] = time.perf_counter() - start
            figures[stage + "_peak_mib"] = status("VmHWM:")
            with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM: the next stage's own peak
                f.write("5")
            return result
        return run

    throttle.choose = timed("choose", throttle.choose)
    conversion.calibrate = timed("calibrate", conversion.calibrate)
    start = time.perf_counter()
    conversion.protect(ckpt, out)
    figures["protect_s"] = time.perf_counter() - start
    figures["convert_peak_mib"] = status("VmHWM:")
    figures["peak_rss_mib"] = max(figures[k] for k in ("choose_peak_mib", "calibrate_peak_mib", "convert_peak_mib"))
    print(json.dumps(figures))
""")


def protect_in_child(ckpt: Path, out: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(out), str(ROOT)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"protect failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--keep", default=None, metavar="DIR", help="write into DIR and keep the files")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="zkfp-taylor-7b-"))
    try:
        t = time.perf_counter()
        ckpt = write_checkpoint(work / "checkpoint", llama_config("llama-2-7b", layers=args.layers))
        shards = sorted(ckpt.glob("*.safetensors"))
        ckpt_size = sum(p.stat().st_size for p in shards)
        print(f"checkpoint: Llama-2-7B widths, {args.layers} blocks, bf16, {ckpt_size / 2**30:.2f} GiB in "
              f"{len(shards)} shards + index (written in {time.perf_counter() - t:.0f} s)")
        r = protect_in_child(ckpt, work / "release")
        files = sorted((work / "release").iterdir())
        shard_files = [p for p in files if p.suffix == ".safetensors"]
        rel_size = sum(p.stat().st_size for p in files)
        manifest = json.loads((work / "release" / "manifest.json").read_text())
        clear = {info["dtype"] for name, info in manifest["tensors"].items() if not name.startswith("taylor.")}
        convert_s = r["protect_s"] - r["calibrate_s"] - r["choose_s"]
        print(f"protect (defaults: N={manifest['n_terms']}, fraction {manifest['expanded_fraction']:.3f}, "
              f"{manifest['calibration']['tokens']} calibration tokens): {r['protect_s']:.0f} s "
              f"(choose the throttle {r['choose_s']:.0f} s, calibrate {r['calibrate_s']:.0f} s, convert {convert_s:.0f} s)")
        print(f"throttle: {json.dumps(manifest['throttle'])}")
        print(f"peak RSS {r['peak_rss_mib']:.0f} MiB: throttle choice {r['choose_peak_mib']:.0f} MiB, calibration "
              f"{r['calibrate_peak_mib']:.0f} MiB, conversion {r['convert_peak_mib']:.0f} MiB (RSS after imports "
              f"{r['imports_rss_mib']:.0f} MiB)")
        print(f"release: {rel_size / 2**30:.2f} GiB in {len(shard_files)} safetensors shards ({len(files)} files "
              f"with manifest and config); clear tensors stored as {sorted(clear)}")
        per_block = 2 * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE) / 2**20
        print(f"(one block of the checkpoint: {per_block:.0f} MiB in bf16, {2 * per_block:.0f} MiB in fp32)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
