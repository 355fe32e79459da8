"""Golden files of the proof regression test (embedded tiny model).

    python -m circuits.golden --update BUNDLE_DIR   # regenerate on purpose, then commit

circuits/golden/embedded.json holds what a change to the circuits or to a dependency must not
alter silently: the circuit key, logrows, each part's rows and settings (minus the timestamp),
v, and the hashes of the verification keys for the SRS they were made with (a dev SRS is random
per machine, so they are compared only when the same SRS is in use).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from circuits.pipeline import settings_digest
from verifier.bundle import read_bundle

GOLDEN = Path(__file__).resolve().parent / "golden" / "embedded.json"
HOW = "if the change is intended, regenerate with `python -m circuits.golden --update BUNDLE_DIR` and commit"


def snapshot(bundle: Path) -> dict:
    b = read_bundle(bundle)
    out = {"circuit_key": b.circuit_key, "ezkl_version": b.ezkl_version, "logrows": b.logrows,
           "srs_sha256": b.srs_sha256, "token_ids": list(b.token_ids), "v": list(b.v)}
    for p in b.proofs:
        settings = json.loads(b.file(p.settings).read_text())
        out[f"{p.name}_num_rows"] = settings["num_rows"]
        out[f"{p.name}_settings_sha256"] = settings_digest(settings)
        out[f"{p.name}_vk_sha256"] = hashlib.sha256(b.file(p.vk).read_bytes()).hexdigest()
    return out


def compare(bundle: Path, golden: Path = GOLDEN, v_tol: float = 1e-6) -> list[str]:
    """Differences between a bundle and the golden file (empty when they agree)."""
    if not golden.is_file():
        return [f"no golden file at {golden}; {HOW}"]
    want, got = json.loads(golden.read_text()), snapshot(bundle)
    fixed = [k for k in got if k in ("circuit_key", "ezkl_version", "logrows", "token_ids")
             or k.endswith(("_num_rows", "_settings_sha256"))]
    diffs = [f"{k}: golden {want.get(k)!r} != now {got[k]!r}" for k in fixed if want.get(k) != got[k]]
    if want.get("srs_sha256") == got["srs_sha256"]:
        diffs += [f"{k} differs for the same SRS" for k in got if k.endswith("_vk_sha256") and want.get(k) != got[k]]
    if len(want.get("v", [])) != len(got["v"]) or max(abs(a - b) for a, b in zip(want["v"], got["v"])) > v_tol:
        diffs.append("v differs from the golden v")
    return [f"{d} — {HOW}" for d in diffs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update", metavar="BUNDLE_DIR", required=True,
                    help="bundle of the embedded model (zkfp prove on taylor.protect(zkfp.zoo.embedded.path()))")
    args = ap.parse_args(argv)
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(snapshot(Path(args.update)), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
