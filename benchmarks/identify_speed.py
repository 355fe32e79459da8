"""Time of `zkfp identify` for an FP.json suspect against a registry of 10,000 fingerprints.

    python benchmarks/identify_speed.py [--entries 10000] [--layers 32] [--invariants-every 10] [--heads H] [--repeats 5] [--dir DIR]

The registry is filled with synthetic fingerprints of a `--layers`-deep model (default 32, a
7B's depth): Gaussian v (64 per layer) and, for one entry in `--invariants-every`, Gaussian
invariants (3·16·15 = 720 per layer, float32) as a plain FP.json carries them; the others are
v-only, as a proof bundle is. With `--heads H`, the entries with invariants also carry per-head
vectors (H heads a layer, 480 numbers each; fingerprint.heads), as does the suspect, so identify
scores its best `identify.HEADS_RESCORED` entries on them. All are on the spec's token list, so every entry is ranked, with
its layers aligned to the suspect's (one dynamic programme over the group). The suspect (an
FP.json with invariants) has one layer fewer than the entries, as a depth-pruned offspring would.
The values do not matter for timing, only the shapes and the count. Measured, each in a fresh
process: the library call `identify` (registry read + ranking), split into reading the entries
(`Registry.groups`) and ranking them, then the whole CLI command `zkfp identify SUSPECT --json`
(interpreter start and imports included) and with `--html` (renders the top matches' images).
Peak RSS is the child's VmHWM. Fingerprinting a model suspect comes on top of this (one
`fingerprint.extract` per registered token list: see benchmarks/fingerprint_memory.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
from fingerprint.identify import identify
from fingerprint.registry import Registry
t_import = time.perf_counter() - t0
reg_path, suspect = sys.argv[1:]
t0 = time.perf_counter()
with Registry(reg_path, create=False) as reg:
    t1 = time.perf_counter()
    ident = identify(suspect, reg)  # first: nothing of the registry read before it in this process
    t_identify = time.perf_counter() - t1
    t1 = time.perf_counter()
    groups = reg.groups()
    t_read = time.perf_counter() - t1
hwm = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))
print(json.dumps({{"import_s": t_import, "read_s": t_read, "identify_s": t_identify,
                  "matches": len(ident.matches), "best": ident.matches[0].name, "peak_rss_mb": hwm / 1024}}))
"""


def build(path: Path, n: int, layers: int, invariants_every: int, heads: int = 0) -> float:
    import numpy as np

    from fingerprint import spec
    from fingerprint.fpjson import Fingerprint
    from fingerprint.registry import Registry

    g = np.random.default_rng(0)
    ids, s = spec.select_tokens(4096), spec.spec_dict(layers)
    t = time.perf_counter()
    with Registry(path) as reg:
        for i in range(n):
            local = i % invariants_every == 0
            inv = [float(x) for x in g.standard_normal(spec.invariant_length(layers))] if local else None
            per_head = [float(x) for x in g.standard_normal(layers * heads * spec.head_length())] if local and heads else None
            reg.add(Fingerprint(spec=s, token_ids=ids, v=[float(x) for x in g.standard_normal(spec.M_DIM * layers)],
                                invariants=inv, heads=per_head), f"model-{i:05d}", source="synthetic")
    return time.perf_counter() - t


def suspect_file(path: Path, registry: Path, target: str) -> Path:
    """A suspect close to the entry `target` (its vectors plus noise), written as FP.json."""
    import numpy as np

    from fingerprint import spec
    from fingerprint.fpjson import Fingerprint, save
    from fingerprint.registry import Registry

    with Registry(registry, create=False) as reg:
        group = reg.groups()[0]
        i = next(j for j, e in enumerate(group.entries) if e.name == target)
        heads = group.heads[i]
    g = np.random.default_rng(1)
    layers = group.spec["layers"]
    keep = lambda x: x.reshape(layers, -1)[:-1].reshape(-1)  # noqa: E731 - the last layer dropped
    v = keep(group.v[i] + 0.3 * g.standard_normal(spec.M_DIM * layers))
    row = int(group.has_invariants[:i].sum())  # `invariants` holds only the entries that carry them
    inv = keep(group.invariants[row] + 0.5 * g.standard_normal(spec.invariant_length(layers)))
    if heads is not None:
        heads = (heads[:-1] + 0.5 * g.standard_normal(heads[:-1].shape)).reshape(-1)
    save(Fingerprint(spec=spec.spec_dict(layers - 1), token_ids=list(group.token_ids), v=[float(x) for x in v],
                     invariants=[float(x) for x in inv], heads=None if heads is None else [float(x) for x in heads]),
         path)
    return path


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"{cmd} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--invariants-every", type=int, default=10)
    ap.add_argument("--heads", type=int, default=0, help="per-head vectors of H heads a layer on the entries with invariants")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", help="keep the registry here (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="zkfp-identify-") as tmp:
        root = Path(args.dir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        reg = root / f"registry-{args.entries}-{args.layers}-{args.invariants_every}-{args.heads}.sqlite"
        if not reg.exists():
            secs = build(reg, args.entries, args.layers, args.invariants_every, args.heads)
            print(f"built {reg.name}: {args.entries} entries in {secs:.1f} s "
                  f"({1000 * secs / args.entries:.2f} ms per add, one transaction each), "
                  f"{reg.stat().st_size / 2**20:.1f} MiB")
        target = f"model-{args.entries * 42 // 100 // args.invariants_every * args.invariants_every:05d}"
        suspect = suspect_file(root / "suspect.json", reg, target)
        child = [sys.executable, "-c", CHILD.format(root=str(ROOT)), str(reg), str(suspect)]
        runs = [json.loads(timed(child)[1].stdout) for _ in range(args.repeats)]
        assert all(r["best"] == target and r["matches"] == args.entries for r in runs), runs
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        print(f"identify (library, median of {args.repeats}): {med('identify_s') * 1000:.0f} ms "
              f"(reading the entries again alone {med('read_s') * 1000:.0f} ms; imports {med('import_s') * 1000:.0f} ms "
              f"before it); peak RSS {max(r['peak_rss_mb'] for r in runs):.0f} MiB")
        cli = [sys.executable, "-m", "zkfp.cli", "identify", str(suspect), "--registry", str(reg)]
        walls = [timed([*cli, "--json"])[0] for _ in range(args.repeats)]
        print(f"zkfp identify SUSPECT.json --json (whole command, median of {args.repeats}): "
              f"{statistics.median(walls):.2f} s")
        html = [timed([*cli, "--html", str(root / "report.html")])[0] for _ in range(args.repeats)]
        print(f"  with --html: {statistics.median(html):.2f} s (report {(root / 'report.html').stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
