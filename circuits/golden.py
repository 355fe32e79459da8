"""Golden files of the proof regression test (embedded tiny model).

    python -m circuits.golden --update BUNDLE_DIR   # regenerate on purpose, then commit

circuits/golden/embedded.json holds what a change to the circuit or to a dependency must not
alter silently: the circuit key, the settings (minus the timestamp), v, and the hash of the
verification key for the SRS it was made with (a dev SRS is random per machine, so the vk
hash is compared only when the same SRS is in use).
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
    proof = b.proofs[0]
    settings = json.loads(b.file(proof.settings).read_text())
    return {
        "circuit_key": b.circuit_key,
        "ezkl_version": b.ezkl_version,
        "logrows": settings["run_args"]["logrows"],
        "num_rows": settings["num_rows"],
        "settings_sha256": settings_digest(settings),
        "vk_sha256": hashlib.sha256(b.file(proof.vk).read_bytes()).hexdigest(),
        "srs_sha256": b.srs_sha256,
        "token_ids": list(b.token_ids),
        "v": list(b.v),
    }


def compare(bundle: Path, golden: Path = GOLDEN, v_tol: float = 1e-6) -> list[str]:
    """Differences between a bundle and the golden file (empty when they agree)."""
    if not golden.is_file():
        return [f"no golden file at {golden}; {HOW}"]
    want, got = json.loads(golden.read_text()), snapshot(bundle)
    diffs = [f"{k}: golden {want[k]!r} != now {got[k]!r}" for k in
             ("circuit_key", "ezkl_version", "logrows", "num_rows", "settings_sha256", "token_ids")
             if want.get(k) != got[k]]
    if want.get("srs_sha256") == got["srs_sha256"] and want.get("vk_sha256") != got["vk_sha256"]:
        diffs.append("vk_sha256 differs for the same SRS")
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
