"""The proof bundle format: one module writes it and reads it (prover, verifier, fingerprint loading).

A bundle folder holds
  manifest.json     the statement: the model's public shape and token ids, the circuit shape
                    (its key derived from that shape), every proof with the KZG commitments to the
                    release tensors it read, the commitment digest, v, the SRS identity, and the
                    sha256 of each release file (checked only against a release)
  <chunk>.proof.json one proof per chunk of the plan (circuits.plan), named after the chunk:
                    "terms" and "encoder" for a model that fits one circuit
  <circuit>.vk.key, <circuit>.settings.json
                    the verification key and ezkl settings of each distinct circuit, named after
                    the first chunk that uses it (the verifier derives its own key and settings
                    and requires these to be identical); chunks are linked by equal commitments
                    to the tensors they share, a chunk's committed output being the next one's
                    committed input
  fingerprint.png   the rendering of v

numpy-free and torch-free: `read_bundle` is a typed parse; it checks structure, not meaning
(`verifier.verify` checks meaning).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from zkfp.errors import BundleError, ZkfpError
from zkfp.files import read_json, write_json

FORMAT = "zkfp-proof-bundle"
VERSION = 3  # 3: chunked plans (chunk_rows; per-chunk proofs, per-circuit keys)
MANIFEST = "manifest.json"
PNG = "fingerprint.png"
MAX_JSON = 64 << 20


@dataclass(frozen=True)
class ProofEntry:
    name: str           # the circuit part it proves ("terms", "encoder")
    proof: str          # file names inside the bundle
    vk: str
    settings: str
    inputs: tuple[tuple[str, object], ...]    # (input name, its KZG points as ezkl writes them)
    outputs: tuple[tuple[str, object], ...]   # committed outputs, likewise
    sha256: dict

    @property
    def commitments(self) -> tuple[tuple[str, object], ...]:
        return self.inputs + self.outputs


def part_files(chunk: str, circuit: str | None = None) -> dict:
    """A chunk's proof file, and its circuit's key and settings files (shared by chunks of one circuit)."""
    circuit = circuit or chunk
    return {"proof": f"{chunk}.proof.json", "vk": f"{circuit}.vk.key", "settings": f"{circuit}.settings.json"}


@dataclass(frozen=True)
class Bundle:
    path: Path
    ezkl_version: str
    family: str
    vocab: int
    token_ids: tuple[int, ...]
    shape_json: dict
    circuit_key: str
    logrows: int
    chunk_rows: int
    proofs: tuple[ProofEntry, ...]
    commitment_digest: str
    v: tuple[float, ...]
    png_sha256: str
    srs_sha256: str
    release_files: dict
    float_cosine: float
    tokens: tuple[str, ...] | None = None  # the token strings of token_ids: not proven (fingerprint.tokens)
    tied_embeddings: bool | None = None    # the release's config said so: not proven (which thresholds apply)

    def file(self, name: str) -> Path:
        return self.path / name


def commitment_digest(release_commitments) -> str:
    """sha256 over the (tensor, points) commitments of the release tensors the chunks read, each
    once, in plan order: the model's identity under this plan and SRS (`zkfp commit`)."""
    blob = [[n, pts] for n, pts in release_commitments]
    return hashlib.sha256(canonical(blob).encode()).hexdigest()


def canonical(points) -> str:
    """One input's commitment points as canonical JSON (for equality and the digest)."""
    return json.dumps(points, sort_keys=True, separators=(",", ":"))


def _plain(name, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise BundleError(f"manifest names {what} {name!r}, which is not a plain file name")
    return name


def _tokens(model: dict) -> tuple[str, ...] | None:
    tokens = model.get("tokens")
    if tokens is None:
        return None
    well_formed = isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)
    if not well_formed or len(tokens) != len(model["token_ids"]):
        raise BundleError("manifest.json is malformed: model.tokens must be the token strings of model.token_ids")
    return tuple(tokens)


def _tied(model: dict) -> bool | None:
    tied = model.get("tied_embeddings")
    if tied is not None and not isinstance(tied, bool):
        raise BundleError("manifest.json is malformed: model.tied_embeddings must be true or false")
    return tied


def read_bundle(path: str | Path) -> Bundle:
    """Parse a bundle folder; a missing, truncated or malformed part raises BundleError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle folder not found: {path}")
    try:
        m = read_json(path / MANIFEST, "bundle manifest", max_bytes=MAX_JSON)
    except ZkfpError as exc:
        raise BundleError(str(exc)) from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError("manifest.json is not a zkfp proof bundle manifest")
    if m.get("format_version") != VERSION:
        raise BundleError(f"bundle format_version {m.get('format_version')!r}: this verifier reads version {VERSION}")
    try:
        proofs = tuple(ProofEntry(
            name=str(p["name"]), proof=_plain(p["proof"], "a proof file"), vk=_plain(p["vk"], "a key file"),
            settings=_plain(p["settings"], "a settings file"),
            inputs=tuple((str(c["name"]), c["points"]) for c in p["inputs"]),
            outputs=tuple((str(c["name"]), c["points"]) for c in p["outputs"]),
            sha256=dict(p["sha256"])) for p in m["proofs"])
        bundle = Bundle(
            path=path, ezkl_version=str(m["ezkl_version"]), family=str(m["model"]["family"]),
            vocab=int(m["model"]["vocab"]), token_ids=tuple(int(t) for t in m["model"]["token_ids"]),
            shape_json=dict(m["circuit"]["shape"]), circuit_key=str(m["circuit"]["key"]),
            logrows=int(m["circuit"]["logrows"]), chunk_rows=int(m["circuit"]["chunk_rows"]), proofs=proofs, commitment_digest=str(m["commitment_digest"]),
            v=tuple(float(x) for x in m["v"]), png_sha256=str(m["png"]["sha256"]),
            srs_sha256=str(m["srs"]["sha256"]), release_files=dict(m["release"]["files"]),
            float_cosine=float(m.get("float_cosine", "nan")), tokens=_tokens(m["model"]),
            tied_embeddings=_tied(m["model"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"manifest.json is malformed: {type(exc).__name__} {exc}") from None
    if not proofs:
        raise BundleError("manifest.json lists no proof")
    for p in proofs:
        for name in (p.proof, p.vk, p.settings):
            if not (path / name).is_file():
                raise BundleError(f"bundle file missing: {name}")
    if not (path / PNG).is_file():
        raise BundleError(f"bundle file missing: {PNG}")
    return bundle


def write_manifest(folder: Path, *, ezkl_version: str, family: str, vocab: int, token_ids, shape_json: dict,
                   circuit_key: str, logrows: int, chunk_rows: int, proofs: list[ProofEntry],
                   release_commitments, v, srs_sha256: str,
                   release_files: dict, float_cosine: float, png_sha256: str, spec: dict,
                   tokens: list[str] | None = None, tied_embeddings: bool | None = None) -> None:
    write_json(folder / MANIFEST, {
        "format": FORMAT,
        "format_version": VERSION,
        "ezkl_version": ezkl_version,
        "fingerprint_spec": spec,   # informational: the verifier uses its own pinned spec
        "model": {"family": family, "vocab": vocab, "token_ids": list(token_ids),
                  "tokens": tokens,  # unproven: which tokens the ids are, for suspects that renumber them
                  "tied_embeddings": tied_embeddings},  # unproven: which calibrated thresholds apply
        "circuit": {"key": circuit_key, "shape": shape_json, "logrows": logrows, "chunk_rows": chunk_rows},
        "proofs": [{"name": p.name, "proof": p.proof, "vk": p.vk, "settings": p.settings, "sha256": p.sha256,
                    "inputs": [{"name": n, "points": pts} for n, pts in p.inputs],
                    "outputs": [{"name": n, "points": pts} for n, pts in p.outputs]}
                   for p in proofs],
        "commitment_digest": commitment_digest(release_commitments),
        "v": [float(x) for x in v],
        "png": {"file": PNG, "sha256": png_sha256},
        "srs": {"sha256": srs_sha256, "logrows": logrows},
        "release": {"files": release_files},
        "float_cosine": float_cosine,
    })
