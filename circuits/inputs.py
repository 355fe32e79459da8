"""The committed circuit inputs, read from a Taylor release with safetensors' numpy API.

numpy only (no torch): the prover and the verifier both call `release_inputs`, so the
verifier quantises and commits exactly the tensors the prover fed the circuit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from circuits.spec import DEFAULT_ORDERS, CircuitShape, LayerShape
from zkfp.errors import ReleaseError

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20


class Release:
    """Minimal read-only view of a release folder (manifest + safetensors, numpy)."""

    def __init__(self, path: str | os.PathLike):
        from zkfp.architectures import CAUSAL_FAMILIES, detect

        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            raise ReleaseError(f"release manifest not found: {mpath}")
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise ReleaseError(f"release manifest is too large: {mpath}")
        try:
            self.manifest = json.loads(mpath.read_text())
            self.config = self.manifest["source"]["config"]
            self.tensors: dict = dict(self.manifest["tensors"])
            self.files: dict = dict(self.manifest["files"])
            self.layers_info: list = list(self.manifest["layers"])
            self.n_terms = int(self.manifest["n_terms"])
            self.activation = str(self.manifest["activation"])
            self.layout = dict(self.manifest["mlp_layout"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ReleaseError(f"release manifest is malformed: {exc}") from None
        self.arch = detect(self.config, CAUSAL_FAMILIES)
        fam = self.arch.family
        if fam.mlp != "gated" or fam.norm != "rms" or fam.qkv is not None:
            raise ReleaseError(f"the proof circuit supports gated RMSNorm families (Llama, Mistral, Qwen2); "
                               f"this release is {fam.name}")
        if not self.layout.get("gated") or self.layout.get("in_bias") or self.layout.get("down_bias"):
            raise ReleaseError("the proof circuit supports gated MLPs without biases only")
        self.prefix = next((p for p in fam.base_prefixes if p + fam.embed in self.tensors), None)
        if self.prefix is None:
            raise ReleaseError("release has no embedding tensor")
        self._handles: dict = {}

    # -- tensors --------------------------------------------------------------------------
    def key(self, name: str, layer: int | None = None) -> str:
        if layer is None:
            return self.prefix + name
        return self.prefix + self.arch.family.layer.format(i=layer) + name

    def get(self, name: str) -> np.ndarray:
        from safetensors import safe_open

        info = self.tensors.get(name)
        if info is None:
            raise ReleaseError(f"tensor {name!r} is not in the release")
        fname = info["file"]
        if "/" in fname or "\\" in fname or fname.startswith("."):
            raise ReleaseError(f"release lists a file name that is not a plain name: {fname!r}")
        if fname not in self._handles:
            try:
                self._handles[fname] = safe_open(self.path / fname, framework="np")
            except Exception as exc:  # noqa: BLE001 - safetensors raises several types
                raise ReleaseError(f"cannot read {fname}: {exc}") from None
        try:
            arr = self._handles[fname].get_tensor(name)
        except Exception as exc:  # noqa: BLE001
            raise ReleaseError(f"cannot read tensor {name} from {fname}: {exc}") from None
        if tuple(arr.shape) != tuple(info["shape"]):
            raise ReleaseError(f"tensor {name} has shape {arr.shape}, manifest says {info['shape']}")
        return np.asarray(arr, dtype=np.float32)

    def mlp(self, layer: int, name: str) -> np.ndarray:
        return self.get(f"taylor.layers.{layer}.{name}")

    def vocab(self) -> int:
        return int(self.tensors[self.key(self.arch.family.embed)]["shape"][0])


def lsq_weights(activation: str, anchor: np.ndarray, orders=DEFAULT_ORDERS) -> np.ndarray:
    """taylor.jets.lsq_weights for the circuit's orders, float32 (numpy only; the verifier
    recomputes them from its own copy of the anchors)."""
    from taylor.jets import lsq_weights as weights

    return weights(activation, anchor, orders).astype(np.float32)


def last_layers(rel: Release, n_layers: int) -> list[int]:
    total = rel.arch.dims.layers
    if total < n_layers:
        raise ReleaseError(f"model has {total} layers, the fingerprint needs the last {n_layers}")
    return list(range(total - n_layers, total))


def shape_of(rel: Release, k: int, n_layers: int, m: int, **overrides) -> CircuitShape:
    d = rel.arch.dims
    layers = []
    for i in last_layers(rel, n_layers):
        s = len(rel.layers_info[i]["expanded"])
        layers.append(LayerShape(expanded=s, exact=d.intermediate - s))
    return CircuitShape(k=k, hidden=d.hidden, heads=d.heads, kv_heads=d.kv_heads, head_dim=d.head_dim,
                        intermediate=d.intermediate, layers=tuple(layers), m=m,
                        activation=rel.activation, **overrides)


def release_inputs(rel: Release, shape: CircuitShape, token_ids: list[int]) -> list[np.ndarray]:
    """The circuit's inputs, in `shape.input_specs()` order, float32."""
    fam = rel.arch.family
    vocab = rel.vocab()
    if any(not 0 <= t < vocab for t in token_ids) or len(token_ids) != shape.k:
        raise ReleaseError(f"token ids must be {shape.k} ids below the vocabulary size {vocab}")
    emb = rel.get(rel.key(fam.embed))
    out: list[np.ndarray] = [emb[np.asarray(token_ids, dtype=np.int64)].copy()]
    del emb
    orders = list(shape.orders)
    for i in last_layers(rel, len(shape.layers)):
        w = lambda role: rel.get(rel.key(role + ".weight", i))  # noqa: E731
        anchor = rel.mlp(i, "anchor")
        coeffs = rel.mlp(i, "coeffs")
        if max(orders) >= coeffs.shape[0]:
            raise ReleaseError(f"release has {coeffs.shape[0]} Taylor orders, the circuit reads orders {orders}")
        out += [
            rel.get(rel.key(fam.attn_norm + ".weight", i)), w(fam.q), w(fam.k), w(fam.v), w(fam.o),
            rel.get(rel.key(fam.mlp_norm + ".weight", i)),
            rel.mlp(i, "in_weight"), rel.mlp(i, "up_weight"),
            np.ascontiguousarray(coeffs[orders]), lsq_weights(rel.activation, anchor, shape.orders),
            rel.mlp(i, "exact_in_weight"), rel.mlp(i, "exact_up_weight"), rel.mlp(i, "exact_down_weight"),
        ]
    for (name, want), arr in zip(shape.input_specs(), out):
        if tuple(arr.shape) != tuple(want):
            raise ReleaseError(f"circuit input {name} has shape {arr.shape}, the circuit expects {want}")
        if not np.isfinite(arr).all():
            raise ReleaseError(f"circuit input {name} holds non-finite values (NaN or inf): no fingerprint to prove")
    return out
