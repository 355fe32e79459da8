"""Read only what the fingerprint needs, compute the invariant terms, encode, and write FP.json.

Memory: tensors are read one at a time (embedding rows with `get_rows`), projected onto the k
token rows at once and dropped, so peak memory is about one weight matrix in fp32, whatever
the size of the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fingerprint import invariants as inv
from fingerprint import spec
from fingerprint.fpjson import Fingerprint, load, save  # noqa: F401 - FP.json lives in fpjson (torch-free)
from zkfp.errors import CheckpointError, FingerprintError

DTYPE = torch.float32


# -- sources: a transformers checkpoint or a Taylor release ----------------------------------
class _CheckpointSource:
    """Tensors by role from a transformers checkpoint (via zkfp's ModelReader)."""

    def __init__(self, path: Path):
        from zkfp.architectures import ModelReader
        from zkfp.checkpoint import Checkpoint

        self.reader = ModelReader(Checkpoint(path))
        self.arch = self.reader.arch
        self.kind = "checkpoint"
        self._qkv_cache: tuple[int, tuple] | None = None

    def embedding_rows(self, ids: list[int]) -> torch.Tensor:
        return self.reader.ckpt.get_rows(self.reader.embedding_key(), ids, DTYPE)

    def vocab(self) -> int:
        return self.reader.ckpt.shape(self.reader.embedding_key())[0]

    def attn_gain(self, i: int) -> torch.Tensor:
        f = self.reader.family
        if f.pre_norm:
            return self.reader.norm(f.attn_norm, i, DTYPE).gain
        # Post-norm (BERT): attention reads the previous block's output LayerNorm (or the embeddings').
        if i == 0:
            return self.reader.ckpt.get(self.reader.key("embeddings.LayerNorm.weight"), DTYPE)
        return self.reader.norm(f.mlp_norm, i - 1, DTYPE).gain

    def mlp_gain(self, i: int) -> torch.Tensor:
        f = self.reader.family
        return self.reader.norm(f.mlp_norm if f.pre_norm else f.attn_norm, i, DTYPE).gain

    def weight(self, role: str, i: int) -> torch.Tensor:
        f = self.reader.family
        if role in ("q", "k", "v") and f.qkv is not None:
            if self._qkv_cache is None or self._qkv_cache[0] != i:
                self._qkv_cache = (i, self.reader._split_qkv(self.reader.linear(f.qkv, i)))
            return self._qkv_cache[1]["qkv".index(role)].weight
        name = getattr(f, role)
        if name is None:
            raise CheckpointError(f"{f.name} has no {role} projection")
        return self.reader.linear(name, i).weight  # source dtype; converted block-wise by _project

    def has_gate(self) -> bool:
        return self.reader.family.gate is not None

    def release(self):
        """Drop per-layer state and close the shards' memory maps (their pages count in RSS)."""
        self._qkv_cache = None
        self.reader.ckpt.close()


def _open_release(path: Path):
    try:
        from fingerprint.release_source import ReleaseSource
    except ImportError as exc:  # taylor not available yet
        raise FingerprintError(f"{path} looks like a Taylor release, but reading releases is unavailable: {exc}")
    return ReleaseSource(path)


def open_source(path: str | os.PathLike):
    """A Taylor release (a folder whose manifest.json says so) or a transformers checkpoint."""
    import json

    path = Path(path)
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            is_release = json.loads(manifest.read_text()).get("format") == "zkfp-taylor-release"
        except (ValueError, OSError, AttributeError):
            is_release = not (path / "config.json").is_file()
        if is_release or not (path / "config.json").is_file():
            return _open_release(path)  # a broken release manifest is reported by ReleaseReader
    return _CheckpointSource(path)


# -- the computation ---------------------------------------------------------------------------
_CHUNK_ROWS = 1024


def _project(A: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """A @ Wᵀ in fp32 for a weight W of any dtype, converting W a block of rows at a time."""
    if W.dtype == A.dtype:
        return A @ W.T
    return torch.cat([A @ block.to(A.dtype).T for block in W.split(_CHUNK_ROWS)], dim=1)


def terms_from_source(src, token_ids: list[int], layers: list[int] | None = None) -> torch.Tensor:
    """(L, 3, k, k) invariant terms of `layers` (default: every block), streaming one tensor at a time."""
    arch = src.arch
    d = arch.dims
    layer_norm = arch.family.norm == "layer"
    picked = list(range(d.layers)) if layers is None else list(layers)
    vocab = src.vocab()
    bad = [t for t in token_ids if not 0 <= t < vocab]
    if bad:
        raise FingerprintError(f"token ids {bad[:5]} are outside the model's vocabulary of {vocab}")
    X = inv.canonical_tokens(src.embedding_rows(token_ids), layer_norm)
    out = []
    with torch.no_grad():
        for i in picked:
            g_att, g_mlp = src.attn_gain(i), src.mlp_gain(i)
            # X is canonical (centred for LayerNorm), so X·(W·diag(g)·C)ᵀ = (X ⊙ g)·Wᵀ and
            # X·(C·W_out) = X·W_out: folding into X avoids copying any weight matrix.
            Xa, Xm = X * g_att, X * g_mlp
            q, k = _project(Xa, src.weight("q", i)), _project(Xa, src.weight("k", i))
            m_a = q @ inv.expand_kv(k, d.heads, d.kv_heads).T
            v = inv.expand_kv(_project(Xa, src.weight("v", i)), d.heads, d.kv_heads)
            m_b = _project(v, src.weight("o", i)) @ X.T
            hidden = _project(Xm, src.weight("up", i))
            if src.has_gate():
                hidden = _project(Xm, src.weight("gate", i)) * hidden
            m_f = _project(hidden, src.weight("down", i)) @ X.T
            src.release()
            out.append(torch.stack([m_a, m_b, m_f]))
    return torch.stack(out)


def extract(path: str | os.PathLike, token_ids: list[int] | None = None, k: int = spec.K_TOKENS,
            with_terms: bool = False):
    """Fingerprint of a transformers checkpoint or a Taylor release.

    `token_ids` defaults to the spec's public choice for the model's vocabulary; pass the ids of
    another fingerprint to compare two models with different vocabularies on the same rows.
    Every layer is read, and v holds one m-vector per layer (fingerprint.encoder).
    Returns a `Fingerprint` (and the raw (L, 3, k, k) terms when `with_terms`).
    """
    from fingerprint.encoder import encode

    src = open_source(path)
    vocab = src.vocab()
    if token_ids is None:
        token_ids = spec.select_tokens(vocab, k)
    token_ids = [int(t) for t in token_ids]
    terms = terms_from_source(src, token_ids)
    if not torch.isfinite(terms).all():
        raise FingerprintError(f"non-finite values in the invariant terms of {path} (corrupt weights?)")
    z = inv.invariant_vector(terms)
    v = encode(z)
    d = src.arch.dims
    fp = Fingerprint(
        spec=spec.spec_dict(layers=len(terms), k=len(token_ids), mlp="gated" if src.has_gate() else "plain"),
        token_ids=token_ids,
        v=[float(x) for x in v],
        invariants=[float(x) for x in z],
        model={"family": src.arch.family.name, "source": src.kind, "vocab": vocab,
               "hidden": d.hidden, "intermediate": d.intermediate, "heads": d.heads, "kv_heads": d.kv_heads},
    )
    return (fp, terms) if with_terms else fp


def huref_vector(path: str | os.PathLike, token_ids: list[int], layers: int = 2) -> torch.Tensor:
    """Baseline: HuRef's invariants exactly as its code computes them (last two layers, raw weights,
    no gain folding, K/V tiled for GQA, weight-space gate⊙up), z-scored per term and flattened."""
    from zkfp.architectures import ModelReader
    from zkfp.checkpoint import Checkpoint

    r = ModelReader(Checkpoint(path))
    d = r.arch.dims
    X = r.ckpt.get_rows(r.embedding_key(), token_ids, torch.float64)
    out = []
    for i in range(d.layers - layers, d.layers):
        w = r.layer(i, torch.float64)
        out.append(inv.huref_terms(X, w.q.weight, w.k.weight, w.v.weight, w.o.weight, w.up.weight, w.down.weight,
                                   None if w.gate is None else w.gate.weight, d.heads, d.kv_heads))
    return inv.invariant_vector(torch.stack(out))
