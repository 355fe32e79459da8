"""Commit to a release's circuit inputs (ezkl.kzg_commit: no evaluation of the circuit), and the
release's commitment digest, which anyone holding a release compares with a published bundle's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from circuits.finish import BN254_R


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


def release_commitments(shape, inputs, circuit, vk: Path, srs: Path) -> tuple[tuple[str, list], ...]:
    """(input name, commitment) of every release tensor the terms circuit reads, in its order."""
    return tuple((name, commit(arr, shape.input_scale, vk, circuit.settings, srs))
                 for (name, _), arr in zip(shape.input_specs(), inputs))


def commit_release(release_dir: str | Path, srs: str | Path) -> str:
    """The commitment digest of a release under the spec's circuit and this SRS (the terms
    circuit's key is derived once per shape and SRS, cached)."""
    from circuits import pipeline
    from circuits import srs as srs_mod
    from circuits.inputs import Release, release_inputs, shape_of
    from fingerprint import spec as fspec
    from verifier.bundle import commitment_digest

    rel = Release(release_dir)
    shape = shape_of(rel, fspec.K_TOKENS, fspec.N_LAYERS, fspec.M_DIM)
    inputs = release_inputs(rel, shape, fspec.select_tokens(rel.vocab(), shape.k))
    logrows = pipeline.logrows_for(shape)
    info = srs_mod.srs_file(srs, logrows)
    circuit = pipeline.build(shape, "terms", logrows)
    keys = pipeline.keys(circuit, info)
    return commitment_digest(release_commitments(shape, inputs, circuit, keys.vk, info.path))
