"""The prover's units of work, run as Ray tasks: set up one circuit, prove one chunk.

Each task writes its result into the bundle-in-progress folder atomically (a temporary name,
then a rename; the result file last), so a killed run leaves only whole results, and a re-run
skips them. Tasks receive paths and plain values only: they rebuild what they need from the
cache (compiled circuits and keys are cached by shape and SRS, `circuits.pipeline`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RESULT = "{name}.result.json"
PROOF = "{name}.proof.json"


def result_path(folder: Path, name: str) -> Path:
    return folder / RESULT.format(name=name)


def proof_path(folder: Path, name: str) -> Path:
    return folder / PROOF.format(name=name)


def read_result(folder: Path, name: str) -> dict | None:
    """A finished chunk's result, or None when it is missing or unreadable (then it is re-proved)."""
    path = result_path(folder, name)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if proof_path(folder, name).is_file() else None


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM; each task runs in a fresh worker process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def setup_circuit(part_json: dict, logrows: int, srs_path: str, srs_sha256: str) -> dict:
    """Compile one circuit and derive its keys (both cached); returns its cost."""
    from circuits import pipeline
    from circuits.plan import Part
    from circuits.srs import srs_file

    t = time.perf_counter()
    circuit = pipeline.build(Part.from_json(part_json), logrows)
    info = srs_file(srs_path, logrows)
    if info.sha256 != srs_sha256:
        raise RuntimeError(f"the SRS at {srs_path} changed during the run")
    pipeline.keys(circuit, info)
    return {"setup_s": time.perf_counter() - t, "peak_rss_bytes": peak_rss_bytes(),
            "rows": circuit.settings_json()["num_rows"]}


def prove_chunk(name: str, part_json: dict, logrows: int, srs_path: str, input_path: str, folder: str) -> dict:
    """Witness and proof of one chunk, written into `folder` as <name>.proof.json and
    <name>.result.json (its committed inputs and outputs, its output values, public values)."""
    import ezkl

    from circuits import pipeline
    from circuits.plan import Part
    from circuits.srs import srs_file

    start = time.perf_counter()
    folder_p = Path(folder)
    circuit = pipeline.build(Part.from_json(part_json), logrows)
    info = srs_file(srs_path, logrows)
    keys = pipeline.keys(circuit, info)
    witness = folder_p / f".{name}.{os.getpid()}.witness.json"
    proof = folder_p / f".{name}.{os.getpid()}.proof.json"
    try:
        ezkl.gen_witness(input_path, str(circuit.compiled), str(witness), vk_path=str(keys.vk), srs_path=str(info.path))
        ezkl.prove(witness=str(witness), model=str(circuit.compiled), pk_path=str(keys.pk),
                   proof_path=str(proof), srs_path=str(info.path))
        w = json.loads(witness.read_text())
        result = {
            "inputs": w["processed_inputs"]["polycommit"],
            "outputs": (w["processed_outputs"] or {}).get("polycommit") or [],
            "values": w["outputs"][0],
            "public": json.loads(proof.read_text())["instances"],
            "cost": {"prove_s": time.perf_counter() - start, "peak_rss_bytes": peak_rss_bytes(),
                     "threads": int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count() or 1)},
        }
        os.replace(proof, proof_path(folder_p, name))
        tmp = folder_p / f".{name}.{os.getpid()}.result.json"
        tmp.write_text(json.dumps(result))
        os.replace(tmp, result_path(folder_p, name))
    finally:
        for leftover in (witness, proof):
            leftover.unlink(missing_ok=True)
    return result["cost"]
