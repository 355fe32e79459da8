"""The committed circuit inputs, read from a Taylor release's safetensors files with numpy.

numpy only (no torch): the prover and the verifier both call `release_inputs`, so the
verifier quantises and commits exactly the tensors the prover fed the circuit. A release keeps
its source's dtype for the tensors it stores in clear; the one reader of safetensors folders
(zkfp.safetensors_folder: safetensors' numpy API, bfloat16 from ml_dtypes) widens them to
float32 exactly.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from circuits.spec import DEFAULT_ORDERS, CircuitShape, LayerShape
from zkfp.errors import ReleaseError
from zkfp.safetensors_folder import FLOAT_DTYPES, SafetensorsFolder, plain_file_name
from zkfp.safetensors_folder import to_float32 as _widen

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on a file's JSON header

# safetensors dtype -> how its little-endian bytes are stored (BF16: raw bits, widened in to_float32)
_RAW_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8")}


def read_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's raw header (tensor name -> {dtype, shape, data_offsets}) and where its
    data section starts. Reading goes through the safetensors library, which exposes no byte
    offsets; this serves the callers that address bytes (StoredTensor.start)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= n <= min(MAX_HEADER_BYTES, size - 8):
                raise ReleaseError(f"{path.name} is not a safetensors file (bad header length)")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise ReleaseError(f"cannot read {path.name}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{path.name} has a malformed safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise ReleaseError(f"{path.name} has a malformed safetensors header")
    return header, 8 + n


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Tensor values of safetensors dtype `dtype` as float32: exact for F32, F16 and BF16 (given
    as ml_dtypes.bfloat16, or as the raw uint16 bits, the top half of the float32 of the same
    value); F64 is rounded."""
    if dtype == "BF16" and raw.dtype == np.uint16:
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return _widen(raw)


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes lie in a safetensors file, checked against its header."""

    path: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int            # absolute offset of its first byte
    raw: np.dtype         # how its elements are stored

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def read(self, first: int = 0, count: int | None = None) -> np.ndarray:
        """Elements [first, first + count) in storage order as float32 (flat), reading only them
        (through safetensors, which also refuses a truncated file)."""
        folder = SafetensorsFolder(self.path.parent, {self.name: self.path.name}, error=ReleaseError)
        return _widen(folder.flat(self.name, first, count))


def locate(path: Path, header: dict, data_start: int, name: str) -> StoredTensor:
    """The checked location of tensor `name` (dtype readable, offsets consistent with its shape)."""
    entry = header.get(name)
    if not isinstance(entry, dict):
        raise ReleaseError(f"tensor {name} is not in {path.name}")
    try:
        dtype, shape = str(entry["dtype"]), tuple(int(x) for x in entry["shape"])
        begin, end = (int(x) for x in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"{path.name} has a malformed header entry for {name}: {exc}") from None
    raw_dtype = _RAW_DTYPES.get(dtype)
    if raw_dtype is None:
        raise ReleaseError(f"tensor {name} has dtype {dtype}; the circuit reads floating-point tensors "
                           f"({', '.join(_RAW_DTYPES)}) only")
    count = int(np.prod(shape, dtype=np.int64))
    if min(shape, default=0) < 0 or not 0 <= begin <= end or end - begin != count * raw_dtype.itemsize:
        raise ReleaseError(f"{path.name} has inconsistent offsets for tensor {name}")
    return StoredTensor(path, name, dtype, shape, data_start + begin, raw_dtype)


def read_tensor(path: Path, header: dict, data_start: int, name: str) -> np.ndarray:
    """One tensor of a safetensors file as float32, reading only its own bytes."""
    t = locate(path, header, data_start, name)
    return t.read().reshape(t.shape)


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
            weight_map = {name: info["file"] for name, info in self.tensors.items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ReleaseError(f"release manifest is malformed: {exc}") from None
        self.arch = detect(self.config, CAUSAL_FAMILIES)  # a non-causal family (BERT) is refused here
        fam = self.arch.family
        if bool(self.layout.get("gated")) != (fam.mlp == "gated"):
            raise ReleaseError(f"the release's MLP layout (gated: {self.layout.get('gated')}) is not "
                               f"{fam.name}'s {fam.mlp} MLP")
        self.prefix = next((p for p in fam.base_prefixes if p + fam.embed in self.tensors), None)
        if self.prefix is None:
            raise ReleaseError("release has no embedding tensor")
        self.folder = SafetensorsFolder(self.path, weight_map, error=ReleaseError, source="release manifest")
        self._headers: dict[str, tuple[dict, int]] = {}  # file name -> (header, data start)

    # -- tensors --------------------------------------------------------------------------
    def key(self, name: str, layer: int | None = None) -> str:
        if layer is None:
            return self.prefix + name
        return self.prefix + self.arch.family.layer.format(i=layer) + name

    def _checked(self, name: str) -> tuple[int, ...]:
        """Tensor `name`'s shape, the manifest's and its file's alike; its dtype a float."""
        info = self.tensors.get(name)
        if info is None:
            raise ReleaseError(f"tensor {name!r} is not in the release")
        shape = self.folder.shape(name)
        if shape != tuple(info["shape"]):
            raise ReleaseError(f"tensor {name} has shape {shape}, manifest says {info['shape']}")
        dtype = self.folder.dtype(name)
        if dtype not in FLOAT_DTYPES:
            raise ReleaseError(f"tensor {name} has dtype {dtype}; the circuit reads floating-point tensors "
                               f"({', '.join(FLOAT_DTYPES)}) only")
        return shape

    def locate(self, name: str) -> StoredTensor:
        """Where tensor `name` lies, its file named by the manifest and its shape the manifest's."""
        self._checked(name)
        fname = plain_file_name(self.tensors[name]["file"], ReleaseError, "release")
        if fname not in self._headers:
            self._headers[fname] = read_header(self.path / fname)
        return locate(self.path / fname, *self._headers[fname], name)

    def get(self, name: str) -> np.ndarray:
        """A tensor as float32 (F32, F16, BF16 exactly; F64 rounded; other dtypes refused)."""
        shape = self._checked(name)
        return _widen(self.folder.raw(name)).reshape(shape)

    def mlp(self, layer: int, name: str) -> np.ndarray:
        return self.get(f"taylor.layers.{layer}.{name}")

    def vocab(self) -> int:
        return int(self.tensors[self.key(self.arch.family.embed)]["shape"][0])


def lsq_weights(activation: str, anchor: np.ndarray, orders=DEFAULT_ORDERS) -> np.ndarray:
    """taylor.jets.lsq_weights for the circuit's orders, float32 (numpy only; the verifier
    recomputes them from its own copy of the anchors)."""
    from taylor.jets import lsq_weights as weights

    return weights(activation, anchor, orders).astype(np.float32)


# How far a recovered point (anchor + folded bias) may lie from conversion's: solve_anchors'
# last grid spacing is 5e-8, and |recovered − anchor − true bias| ≤ 3.5e-8 was measured on tiny
# GPT-2 (tanh-GELU) and GPT-NeoX (erf-GELU) releases, all blocks. The consistency check allows it
# as it allows the anchor's rounding (circuits.consistency): it matters only where c_n(p) nearly vanishes.
POINT_FIT_ERROR = 1e-7


def expansion_points(rel: Release, layer: int, coeffs: np.ndarray | None = None) -> np.ndarray:
    """Where block `layer`'s expanded neurons' Taylor series are taken, p_j (fp64): the released
    anchor, or, when conversion folded a first-layer bias b into it (GPT-2, GPT-NeoX: b is not
    released), anchor + b recovered from the stored orders as the point whose coefficient vector
    best explains them (taylor.effective.solve_anchors, as fingerprint.extract reads a release).
    A public function of the release: prover and verifier derive the same points."""
    from taylor.effective import expansion_points as points  # the rule conversion and the runtime use

    anchor, folded = rel.mlp(layer, "anchor"), bool(rel.layout.get("in_bias"))
    theta = None
    if folded and anchor.size:  # only then are the orders read
        theta = rel.mlp(layer, "coeffs") if coeffs is None else coeffs
        if not np.isfinite(theta).all():
            raise ReleaseError(f"taylor.layers.{layer}.coeffs holds non-finite values")
    return points(rel.activation, anchor, theta, folded)


def shape_of(rel: Release, k: int, m: int, **overrides) -> CircuitShape:
    """The circuit of this release: every layer, each with its own split of expanded and exact neurons."""
    d = rel.arch.dims
    layers = []
    for i in range(d.layers):
        s = len(rel.layers_info[i]["expanded"])
        layers.append(LayerShape(expanded=s, exact=d.intermediate - s))
    return CircuitShape(k=k, hidden=d.hidden, heads=d.heads, kv_heads=d.kv_heads, head_dim=d.head_dim,
                        intermediate=d.intermediate, layers=tuple(layers), m=m,
                        activation=rel.activation, mlp=rel.arch.family.mlp, **overrides)


def attention(rel: Release, layer: int) -> dict[str, np.ndarray]:
    """Block `layer`'s q, k, v (nn.Linear's (out, in)) and o (hidden, heads·head_dim), split out of
    a fused projection (GPT-2: [q|k|v] along the output; GPT-NeoX: per head [q|k|v][head_dim]) and
    transposed from GPT-2's Conv1D (in, out) storage, as zkfp.architectures.ModelReader reads them."""
    fam, d = rel.arch.family, rel.arch.dims

    def linear(role: str) -> np.ndarray:
        w = rel.get(rel.key(role + ".weight", layer))
        return np.ascontiguousarray(w.T) if fam.conv1d else w

    out = {"o": linear(fam.o)}
    if fam.qkv is None:
        return out | {r: linear(getattr(fam, r)) for r in ("q", "k", "v")}
    fused = linear(fam.qkv)
    if fused.shape[0] != 3 * d.heads * d.head_dim:
        raise ReleaseError(f"{fam.qkv} of layer {layer} has {fused.shape[0]} rows, expected "
                           f"3 × {d.heads} heads × {d.head_dim}")
    if fam.name == "gpt_neox":
        parts = fused.reshape(d.heads, 3, d.head_dim, -1).transpose(1, 0, 2, 3).reshape(3, d.heads * d.head_dim, -1)
    else:
        parts = fused.reshape(3, d.heads * d.head_dim, -1)
    return out | {r: np.ascontiguousarray(w) for r, w in zip("qkv", parts)}


def release_inputs(rel: Release, shape: CircuitShape, token_ids: list[int]) -> list[np.ndarray]:
    """The circuit's inputs, in `shape.input_specs()` order, float32. LayerNorm families' token
    rows are centred (X·C, fingerprint.invariants.canonical_tokens): the circuit then needs no
    centring of its own (circuits.graph)."""
    fam = rel.arch.family
    vocab = rel.vocab()
    if any(not 0 <= t < vocab for t in token_ids) or len(token_ids) != shape.k:
        raise ReleaseError(f"token ids must be {shape.k} ids below the vocabulary size {vocab}")
    emb = rel.get(rel.key(fam.embed))
    tokens = emb[np.asarray(token_ids, dtype=np.int64)].copy()
    del emb
    if fam.norm == "layer":
        tokens = (tokens - tokens.mean(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    named: dict[str, np.ndarray] = {"tokens": tokens}
    orders = list(shape.orders)
    first = "gate_" if rel.layout.get("gated") else "up_"   # the circuit's name for the release's in_weight
    if len(shape.layers) != rel.arch.dims.layers:
        raise ReleaseError(f"the circuit reads {len(shape.layers)} layers, the release has {rel.arch.dims.layers}")
    for i in range(len(shape.layers)):
        coeffs = rel.mlp(i, "coeffs")
        if max(orders) >= coeffs.shape[0]:
            raise ReleaseError(f"release has {coeffs.shape[0]} Taylor orders, the circuit reads orders {orders}")
        layer = {"attn_gain": rel.get(rel.key(fam.attn_norm + ".weight", i)), **attention(rel, i),
                 "mlp_gain": rel.get(rel.key(fam.mlp_norm + ".weight", i)),
                 first + "s": rel.mlp(i, "in_weight"), "coeffs_s": np.ascontiguousarray(coeffs[orders]),
                 "lsq_s": lsq_weights(rel.activation, expansion_points(rel, i, coeffs), shape.orders),
                 first + "f": rel.mlp(i, "exact_in_weight"), "down_f": rel.mlp(i, "exact_down_weight")}
        if rel.layout.get("gated"):
            layer |= {"up_s": rel.mlp(i, "up_weight"), "up_f": rel.mlp(i, "exact_up_weight")}
        del coeffs
        named |= {f"l{i}.{role}": arr for role, arr in layer.items()}
    out = []
    for name, want in shape.input_specs():
        arr = named.get(name)
        if arr is None or tuple(arr.shape) != tuple(want):
            got = "nothing" if arr is None else f"shape {arr.shape}"
            raise ReleaseError(f"circuit input {name}: the release gives {got}, the circuit expects {want}")
        if not np.isfinite(arr).all():
            raise ReleaseError(f"circuit input {name} holds non-finite values (NaN or inf): no fingerprint to prove")
        out.append(arr)
    return out
