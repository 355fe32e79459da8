"""The fingerprint specification: one set of constants shared by the float path and the proof.

Changing any of these changes every fingerprint, so they are bundled under `SPEC_VERSION`
and recorded in each FP.json; `compare` refuses files of different versions.
"""

from __future__ import annotations

import hashlib

SPEC_VERSION = "zkfp-fp/3"  # /2: every layer, one v per layer (aligned when compared); /3: off-diagonal entries only
K_TOKENS = 16        # k: selected token rows (each term is k×k); small so the circuit stays small
TERMS = ("qk", "vo", "mlp")  # M_a, M_b, M_f per layer, for every layer of the model
M_DIM = 64           # m: length of each layer's Gaussian vector v_l (v is their concatenation)
TOKEN_LO = 256       # token ids are drawn from [TOKEN_LO, min(vocab, TOKEN_HI))
TOKEN_HI = 4096
TOKEN_SALT = "zkfp-token-selection/1"
ENCODER = "gaussian-projection/2"  # one projection, applied to each layer's invariants (fingerprint.encoder)
ENCODER_SEED = 20250101


def off_diagonal(k: int = K_TOKENS) -> list[int]:
    """Flat indices of a k×k term's off-diagonal entries, the ones the spec reads. A diagonal
    entry is a token's response to itself (x_iᵀAx_i); where those stand out (M_f's hold 58 % of
    the term's norm in models whose selected rows are barely trained) they are a pattern every
    model shares, whatever its lineage (benchmarks/diagonal_terms.py)."""
    return [i for i in range(k * k) if i % (k + 1)]


def layer_length(k: int = K_TOKENS) -> int:
    """Invariants of one layer: the off-diagonal entries of its three k×k terms."""
    return len(TERMS) * k * (k - 1)


def head_length(k: int = K_TOKENS) -> int:
    """One attention head's vector (fingerprint.heads): the off-diagonal entries of its two k×k terms."""
    return 2 * k * (k - 1)


def invariant_length(layers: int, k: int = K_TOKENS) -> int:
    return layers * layer_length(k)


def token_range(vocab: int) -> tuple[int, int]:
    """Candidate id range for a vocabulary of `vocab` ids.

    The range starts above the first 256 ids, which byte-level BPE vocabularies (GPT-2, Llama,
    Qwen, the tiny models' tokenizer) give to single bytes and specials: many of those are never
    seen in training and keep their initial values, which would make unrelated seeds look
    different for the wrong reason. It ends at 4096 so that a vocabulary extension (ids appended
    at the end) never changes the choice: any two vocabularies of at least 4096 ids get the
    same ids. For smaller vocabularies the range ends at the vocabulary size.
    """
    lo, hi = (TOKEN_LO, min(vocab, TOKEN_HI)) if vocab >= TOKEN_LO + 2 * K_TOKENS else (0, vocab)
    return lo, hi


def rank_key(token_id: int, salt: str = TOKEN_SALT) -> bytes:
    return hashlib.sha256(f"{salt}:{token_id}".encode()).digest()


def select_tokens(vocab: int, k: int = K_TOKENS, candidates=None, salt: str = TOKEN_SALT) -> list[int]:
    """The public, deterministic token choice: the k candidates with the smallest salted SHA-256.

    `candidates` defaults to `token_range(vocab)`; pass another set (e.g. only ids seen in a
    corpus) to study the effect of the choice. The result is sorted by hash rank, so it does not
    depend on the order of `candidates`, and adding candidates can only replace ids whose rank
    is beaten (a vocabulary extension beyond TOKEN_HI adds none).
    """
    if candidates is None:
        lo, hi = token_range(vocab)
        candidates = range(lo, hi)
    pool = sorted({int(c) for c in candidates if 0 <= int(c) < vocab}, key=lambda t: rank_key(t, salt))
    if len(pool) < k:
        raise ValueError(f"only {len(pool)} candidate token ids for k={k} (vocabulary {vocab})")
    return pool[:k]


def spec_dict(layers: int, k: int = K_TOKENS, m: int = M_DIM, mlp: str = "gated") -> dict:
    """The spec as FP.json records it: `layers` is the model's depth (every layer is read), `mlp`
    its MLP kind ("gated": M_f through the gate; "plain": GPT-2's activation-free M_f)."""
    return {"version": SPEC_VERSION, "k": k, "layers": layers, "m": m, "mlp": mlp, "terms": list(TERMS),
            "token_rule": f"sha256('{TOKEN_SALT}:'+id) smallest k over [{TOKEN_LO}, min(vocab,{TOKEN_HI}))",
            "encoder": ENCODER}
