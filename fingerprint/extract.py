"""The fingerprint of a model: its invariant terms on the spec's token rows, encoded into v.

Memory: tensors are read one at a time (embedding rows with `get_rows`), projected onto the k
token rows at once and dropped, so peak memory is about one weight matrix in fp32, whatever
the size of the model.
"""

from __future__ import annotations

import os

import torch

from fingerprint import invariants as inv
from fingerprint import spec
from fingerprint import tokens as token_strings
from fingerprint.fpjson import Fingerprint
from fingerprint.sources import open_source
from zkfp.errors import FingerprintError

_CHUNK_ROWS = 1024


def _project(A: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """A @ Wᵀ in fp32 for a weight W of any dtype, converting W a block of rows at a time."""
    if W.dtype == A.dtype:
        return A @ W.T
    return torch.cat([A @ block.to(A.dtype).T for block in W.split(_CHUNK_ROWS)], dim=1)


def terms_from_source(src, token_ids: list[int], layers: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, 3, k, k) invariant terms of `layers` (default: every block) and their attention terms per
    head (L, H, 2, k, k; fingerprint.heads), streaming one tensor at a time."""
    arch = src.arch
    d = arch.dims
    layer_norm = arch.family.norm == "layer"
    picked = list(range(d.layers)) if layers is None else list(layers)
    vocab = src.vocab()
    bad = [t for t in token_ids if not 0 <= t < vocab]
    if bad:
        raise FingerprintError(f"token ids {bad[:5]} are outside the model's vocabulary of {vocab}")
    X = inv.canonical_tokens(src.embedding_rows(token_ids), layer_norm)
    out, per_head = [], []
    with torch.no_grad():
        for i in picked:
            g_att, g_mlp = src.attn_gain(i), src.mlp_gain(i)
            # X is canonical (centred for LayerNorm), so X·(W·diag(g)·C)ᵀ = (X ⊙ g)·Wᵀ and
            # X·(C·W_out) = X·W_out: folding into X avoids copying any weight matrix.
            Xa, Xm = X * g_att, X * g_mlp
            q = _project(Xa, src.weight("q", i))
            k, v = (inv.expand_kv(_project(Xa, src.weight(name, i)), d.heads, d.kv_heads) for name in ("k", "v"))
            m_a = q @ k.T
            w_o = src.weight("o", i)
            m_b = _project(v, w_o) @ X.T
            per_head.append(inv.head_terms(q, k, v, w_o, X, d.heads))
            hidden = _project(Xm, src.weight("up", i))
            if src.has_gate():
                hidden = _project(Xm, src.weight("gate", i)) * hidden
            m_f = _project(hidden, src.weight("down", i)) @ X.T
            src.release()
            out.append(torch.stack([m_a, m_b, m_f]))
    return torch.stack(out), torch.stack(per_head)


def extract(path: str | os.PathLike, token_ids: list[int] | None = None, k: int = spec.K_TOKENS,
            with_terms: bool = False):
    """Fingerprint of a transformers checkpoint or a Taylor release.

    `token_ids` defaults to the spec's public choice for the model's vocabulary; pass the ids of
    another fingerprint (`fingerprint.tokens.ids_to_read`) to compare two models with different
    vocabularies on the same tokens.
    Every layer is read, and v holds one m-vector per layer (fingerprint.encoder); the invariants
    and the per-head vectors (fingerprint.heads) are recorded beside it for local comparisons, and
    the token strings of the ids read when the folder has a tokenizer.
    Returns a `Fingerprint` (and the raw (L, 3, k, k) terms when `with_terms`).
    """
    from fingerprint.encoder import encode

    src = open_source(path)
    vocab = src.vocab()
    if token_ids is None:
        token_ids = spec.select_tokens(vocab, k)
    token_ids = [int(t) for t in token_ids]
    terms, head_terms = terms_from_source(src, token_ids)
    if not (torch.isfinite(terms).all() and torch.isfinite(head_terms).all()):
        raise FingerprintError(f"non-finite values in the invariant terms of {path} (corrupt weights?)")
    z = inv.invariant_vector(terms)
    v = encode(z)
    d = src.arch.dims
    fp = Fingerprint(
        spec=spec.spec_dict(layers=len(terms), k=len(token_ids), mlp="gated" if src.has_gate() else "plain"),
        token_ids=token_ids,
        v=[float(x) for x in v],
        invariants=[float(x) for x in z],
        heads=[round(float(x), 6) for x in inv.head_vectors(head_terms).reshape(-1)],
        model={"family": src.arch.family.name, "source": src.kind, "vocab": vocab,
               "hidden": d.hidden, "intermediate": d.intermediate, "heads": d.heads, "kv_heads": d.kv_heads,
               "tied_embeddings": src.arch.tied_embeddings},
        tokens=token_strings.strings_of(path, token_ids),
    )
    return (fp, terms) if with_terms else fp
