"""FP.json: the fingerprint record, writing it and reading it back. Torch-free (the standard
library only), so comparing two published fingerprints never loads the model stack."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fingerprint import spec
from zkfp.errors import FingerprintError, ZkfpError
from zkfp.files import read_json

FORMAT = "zkfp-fingerprint"


@dataclass
class Fingerprint:
    spec: dict
    token_ids: list[int]
    v: list[float]
    invariants: list[float] | None = None  # z-scored flat invariant vector (local use)
    model: dict = field(default_factory=dict)
    tokens: list[str] | None = None  # the token strings of token_ids (fingerprint.tokens), when known
    heads: list[float] | None = None  # per-head vectors, flat (L, H, 2k(k−1)) (fingerprint.heads; local use)

    @property
    def layers(self) -> int:
        return int(self.spec["layers"])

    def layer_v(self):
        """v as a (layers, m) float64 numpy array: one Gaussian vector per layer."""
        import numpy as np

        return np.asarray(self.v, dtype=np.float64).reshape(self.layers, -1)

    def layer_invariants(self):
        """The invariants as a (layers, 3k(k−1)) float64 numpy array (None when the file left them out)."""
        import numpy as np

        return None if self.invariants is None else np.asarray(self.invariants, dtype=np.float64).reshape(self.layers, -1)

    def layer_heads(self):
        """The per-head vectors as a (layers, heads, 2k(k−1)) float64 numpy array (None when left out)."""
        import numpy as np

        if self.heads is None:
            return None
        return np.asarray(self.heads, dtype=np.float64).reshape(self.layers, -1, spec.head_length(int(self.spec["k"])))

    def invariant_tensor(self):
        """The invariants as a float64 torch tensor (None when the file left them out)."""
        import torch

        return None if self.invariants is None else torch.tensor(self.invariants, dtype=torch.float64)

    def to_json(self, with_invariants: bool = True) -> dict:
        out = {"format": FORMAT, "spec": self.spec, "token_ids": self.token_ids, "v": self.v, "model": self.model}
        if self.tokens is not None:
            out["tokens"] = self.tokens
        if with_invariants and self.invariants is not None:
            out["invariants"] = self.invariants
        if with_invariants and self.heads is not None:
            out["heads"] = self.heads
        return out


def save(fp: Fingerprint, path: str | os.PathLike, with_invariants: bool = True) -> None:
    Path(path).write_text(json.dumps(fp.to_json(with_invariants)) + "\n")


def is_bundle(path: str | os.PathLike) -> bool:
    """A folder whose manifest.json says it is a proof bundle (not a model or a release)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == "zkfp-proof-bundle"
    except (ValueError, OSError, AttributeError):
        return False


def load(path: str | os.PathLike) -> Fingerprint:
    """Read and validate FP.json, or the proven v of a proof bundle folder (check the bundle with
    `zkfp verify` first: loading it trusts its manifest). Any malformed, truncated or inconsistent
    file is a FingerprintError."""
    try:
        data = bundle_fingerprint_json(path) if Path(path).is_dir() else read_json(path, "fingerprint file")
    except FingerprintError:
        raise
    except ZkfpError as exc:
        raise FingerprintError(str(exc)) from None
    return from_json(data, f"fingerprint file {path}")


def from_json(data, where: str) -> Fingerprint:
    """Validate a parsed FP.json object (`where` names it in error messages)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FingerprintError(f"{where} is not a zkfp fingerprint (missing format tag)")
    s = data.get("spec")
    if not isinstance(s, dict) or not isinstance(s.get("version"), str):
        raise FingerprintError(f"{where} has no spec version")
    for key in ("k", "layers", "m"):
        if not isinstance(s.get(key), int) or s[key] <= 0:
            raise FingerprintError(f"{where}: spec.{key} is missing or invalid")
    if s.get("mlp", "gated") not in ("gated", "plain"):
        raise FingerprintError(f"{where}: spec.mlp must be 'gated' or 'plain', not {s.get('mlp')!r}")
    ids = data.get("token_ids")
    if not isinstance(ids, list) or not all(isinstance(t, int) and t >= 0 for t in ids) or len(ids) != s["k"]:
        raise FingerprintError(f"{where}: token_ids must be {s['k']} non-negative integers")
    v = _finite_floats(data.get("v"), s["m"] * s["layers"])
    if v is None:
        raise FingerprintError(f"{where}: v must be {s['m']} × {s['layers']} layers = {s['m'] * s['layers']} finite numbers")
    tokens = data.get("tokens")
    if tokens is not None and (not isinstance(tokens, list) or len(tokens) != s["k"]
                               or not all(isinstance(t, str) for t in tokens)):
        raise FingerprintError(f"{where}: tokens must be the {s['k']} token strings of token_ids")
    invs = data.get("invariants")
    if invs is not None:
        invs = _finite_floats(invs, spec.invariant_length(s["layers"], s["k"]))
        if invs is None:
            raise FingerprintError(f"{where}: invariants have the wrong length or non-finite values")
    heads = data.get("heads")
    if heads is not None:
        per_layer = s["layers"] * spec.head_length(s["k"])
        whole = isinstance(heads, list) and heads and len(heads) % per_layer == 0
        heads = _finite_floats(heads, None) if whole else None
        if heads is None:
            raise FingerprintError(f"{where}: heads must be a whole number of heads × {per_layer} finite numbers")
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    return Fingerprint(spec=s, token_ids=ids, v=v, invariants=invs, model=model, tokens=tokens, heads=heads)


def bundle_fingerprint_json(path: str | os.PathLike, v=None) -> dict:
    """A proof bundle's fingerprint as an FP.json object (its manifest's v, or the `v` a verifier
    established)."""
    from verifier.bundle import read_bundle

    b = read_bundle(path)
    s = spec.spec_dict(layers=len(b.shape_json["layers"]), mlp=b.shape_json.get("mlp", "gated"))
    return {"format": FORMAT, "spec": s, "token_ids": list(b.token_ids),
            **({} if b.tokens is None else {"tokens": list(b.tokens)}),
            "v": list(b.v if v is None else v),
            "model": {"proof_bundle": Path(path).name, "commitment_digest": b.commitment_digest,
                      "release_files": b.release_files,
                      **({} if b.tied_embeddings is None else {"tied_embeddings": b.tied_embeddings})}}


def _finite_floats(x, n: int | None) -> list[float] | None:
    """`x` as a list of floats if it is a list of `n` (any number, for None) finite numbers: ints or
    floats (numpy's too), not booleans. Else None. Checked in numpy: a 7B-shaped file's per-head vectors
    are half a million numbers."""
    import numpy as np

    if not isinstance(x, list) or (n is not None and len(x) != n):
        return None
    if not all(issubclass(t, (int, float)) and not issubclass(t, bool) for t in set(map(type, x))):
        return None
    try:
        floats = np.asarray(x, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        return None
    return floats.tolist() if np.isfinite(floats).all() else None
