"""Commit to a release's circuit inputs (ezkl.kzg_commit: no evaluation of the circuit), and the
release's commitment digest, which anyone holding a release compares with a published bundle's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from circuits.finish import BN254_R
from zkfp.errors import ZkfpError


def quantise(values: np.ndarray, scale: int) -> list[str]:
    """ezkl's quantisation: round(x · 2^scale) half away from zero, as a BN254 field element in
    32-byte little-endian hex (negative → r − |int|). Tested equal to ezkl.float_to_felt."""
    y = np.asarray(values, dtype=np.float64).reshape(-1) * float(2 ** scale)
    q = (np.sign(y) * np.floor(np.abs(y) + 0.5)).astype(np.int64)
    return [(v if v >= 0 else BN254_R + v).to_bytes(32, "little").hex() for v in q.tolist()]


def commit(values: np.ndarray, scale: int, vk: Path, settings: Path, srs: Path) -> list:
    """The KZG commitment of one circuit input, in the JSON form ezkl writes in a witness."""
    import ezkl

    points = ezkl.kzg_commit(quantise(values, scale), str(vk), str(settings), str(srs))
    return [_compressed(p.x, p.y) for p in points]


def _compressed(x: str, y: str) -> str:
    """A BN254 G1 point as a witness stores it: x (32 bytes little-endian hex) with the parity of y
    in the top bit of the last byte."""
    raw = bytearray.fromhex(x)
    if int.from_bytes(bytes.fromhex(y), "little") & 1:
        raw[-1] |= 0x80
    return raw.hex()


def release_commitments(plan, tensors: dict, circuits: dict, srs: Path) -> list[tuple[str, list]]:
    """(tensor, commitment) of every release tensor the plan's chunks read, each once, in plan
    order; `tensors` holds the model's whole circuit inputs by name, `circuits` maps each part key
    to its (circuit, vk)."""
    from circuits.plan import chunk_inputs

    out: dict[str, list] = {}
    for c in plan.terms_chunks:
        circuit, vk = circuits[c.part.key()]
        for name, arr in zip(c.inputs(plan.shape), chunk_inputs(c, plan.shape, tensors)):
            if name not in out:
                out[name] = commit(arr, plan.shape.input_scale, vk, circuit.settings, srs)
    return [(name, out[name]) for name in plan.release_tensors()]


def commit_release(release_dir: str | Path, srs: str | Path, chunk_rows: int | None = None) -> str:
    """The commitment digest of a release under the spec's plan and this SRS (each terms
    circuit's key is derived once per circuit and SRS, cached). `chunk_rows`: a bundle's smaller
    row budget per chunk, when it declares one."""
    from circuits import pipeline
    from circuits import srs as srs_mod
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.plan import make_plan
    from fingerprint import spec as fspec
    from verifier.bundle import commitment_digest

    rel = Release(release_dir)
    shape = shape_of(rel, fspec.K_TOKENS, fspec.M_DIM)
    inputs = release_inputs(rel, shape, fspec.select_tokens(rel.vocab(), shape.k))
    try:
        plan = make_plan(shape, pipeline.plan_logrows(shape, chunk_rows), chunk_rows)
    except ValueError as exc:
        raise ZkfpError(f"--chunk-rows: {exc}") from None
    info = srs_mod.srs_file(srs, plan.logrows)
    circuits = {}
    for c in plan.terms_chunks:
        if c.part.key() not in circuits:
            circuit = pipeline.build(c.part, plan.logrows)
            circuits[c.part.key()] = (circuit, pipeline.vk(circuit, info))
    tensors = {n: a for (n, _), a in zip(shape.input_specs(), inputs)}
    return commitment_digest(release_commitments(plan, tensors, circuits, info.path))
