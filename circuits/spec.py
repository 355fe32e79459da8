"""The circuit's shape: everything that decides the compiled circuit, and nothing else.

numpy-free and torch-free on purpose: the verifier imports this module (to know the order and
shapes of the committed inputs) and must not pull in torch.

Two releases with the same `CircuitShape` share one compiled circuit and one key pair (the
cache in `circuits.pipeline` is keyed by `CircuitShape.key()`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from fingerprint import spec as fspec  # the fingerprint spec's constants (stdlib only, like this module)

CIRCUIT_VERSION = "zkfp-circuit/5"  # /2: terms private, v public; /3: chunks, 1/σ = u²; /4: every layer, v per layer; /5: off-diagonal
EZKL_VERSION = "23.0.5"
# Taylor orders whose coefficient tensors the circuit reads to rebuild W_down of expanded
# neurons (least squares over these orders: W_d[:, j] = Σ_n c_n(a_j) Θ_n[:, j] / Σ_n c_n(a_j)²).
# SiLU's c_1 vanishes only at a ≈ -1.28 where c_2 ≈ 0.11, so {1, 2} is well conditioned on the
# anchors' usual range; the per-neuron weights are public (computed from the anchors).
DEFAULT_ORDERS = (1, 2)
# Fixed-point scale of every committed input (value ≈ int / 2^INPUT_SCALE), chosen analytically:
# weights and embeddings of trained models are O(1e-2..1), so 2^-10 keeps the per-entry error
# of the terms ~1e-3 relative (measured), while the deepest product (M_f: 9 factors, scale 90)
# stays inside i128 and, rescaled once to 6·10 = 60, inside the 2^70 range check (5 legs).
INPUT_SCALE = 10
PARAM_SCALE = 10
DECOMP_BASE = 16384
DECOMP_LEGS = 5
NUM_INNER_COLS = 2
# The encoder circuit (z-scores and projection; see circuits.graph.build_encoder_onnx) reads the
# terms circuit's committed output integers, which are M·2^60, as values at scale 2^40 (z-scores
# do not see the factor 2^20). Measured on ezkl 23.0.5 (embedded model): with these settings the
# encoder proves at 106,754 rows (2^17) and its v is within 5e-4 of the float v; with the terms
# circuit's own settings (scale 10, rebase 6, 5 legs) every z-score variant tried overflowed the
# range checks or failed the constraints (products of 2^60-scale terms reach 2^120), and ezkl's
# Sqrt/Reciprocal failed `ezkl.mock` on these scales: hence a private 1/σ with public checks.
ENC_INPUT_SCALE = 40     # also the scale of 1/σ (30 lost the checks' precision for σ > 2^8)
ENC_PARAM_SCALE = 16     # the projection P at 2^-16 (2^-10 left |v - float v| at 0.026)
ENC_DECOMP_LEGS = 8
ENC_INNER_COLS = 4       # 2 columns needed 2^18 rows, which would force both circuits to 2^18
TERM_SHIFT = 24          # terms are divided by 2^24 (exact) before anything multiplies them
# Terms whose standard deviation lies in this window encode exactly enough. Measured with
# `ezkl.mock` of the encoder on the embedded model's terms rescaled to std 1.37·2^e (benchmarks/encoder_window.py): every check
# within 2.6e-4 of 1 and |v − float v| ≤ 2.7e-3 from 2^-28 to 2^12 (≤ 6.4e-4 from 2^-26). The
# shift places the window: (scale, shift) = (30, 20) held [2^-32, 2^8] (the constraints fail at
# 2^10), (30, 28) [2^-24, 2^12]. Five-step benchmark models have terms near 2^-22, trained tiny
# ones 2^-13..2^-6.
TERM_STD_RANGE = (2.0 ** -28, 2.0 ** 12)
# Models too large for one circuit are proved in chunks (circuits.plan) of this logrows: one
# fixed size, so the commitments, and so the model's commitment digest, do not depend on the
# prover's machine. 2^18 rows take ~7.9 GB to prove (30 KB per row, measured): two chunks at
# once on a 24 GB machine.
CHUNK_LOGROWS = 18


@dataclass(frozen=True)
class LayerShape:
    """What a circuit reads of one layer. The model's own shape reads everything; a chunk's reads
    `groups` KV-head groups of `dims` head dimensions each and blocks of neurons (circuits.plan)."""
    expanded: int   # |S|: neurons released as Taylor coefficients
    exact: int      # |F|: neurons released in the clear
    groups: int | None = None  # KV-head groups (0: no attention terms; None: all of the model's)
    dims: int | None = None    # head dimensions per group (None: all)

    @property
    def terms(self) -> tuple[str, ...]:
        """The terms this layer contributes to, in circuit order (see fingerprint.spec.TERMS)."""
        return (("qk", "vo") if self.groups * self.dims else ()) + (("mlp",) if self.expanded + self.exact else ())


@dataclass(frozen=True)
class CircuitShape:
    k: int                  # selected tokens
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    layers: tuple[LayerShape, ...]  # every layer of the model, in order
    m: int                  # length of each layer's v (v has m × layers values)
    activation: str = "silu"
    mlp: str = "gated"      # "plain" (GPT-2, GPT-NeoX): no gate; M_f = X·W_upᵀ·W_downᵀ·Xᵀ
    orders: tuple[int, ...] = DEFAULT_ORDERS
    encoder: str = fspec.ENCODER
    input_scale: int = INPUT_SCALE
    param_scale: int = PARAM_SCALE
    num_inner_cols: int = NUM_INNER_COLS
    decomp_base: int = DECOMP_BASE
    decomp_legs: int = DECOMP_LEGS
    enc_input_scale: int = ENC_INPUT_SCALE
    enc_param_scale: int = ENC_PARAM_SCALE
    enc_decomp_legs: int = ENC_DECOMP_LEGS
    enc_inner_cols: int = ENC_INNER_COLS
    term_shift: int = TERM_SHIFT
    version: str = CIRCUIT_VERSION
    ezkl_version: str = EZKL_VERSION
    extra: tuple = field(default=())

    def __post_init__(self):
        if self.mlp not in ("gated", "plain"):
            raise ValueError(f"mlp must be 'gated' or 'plain', not {self.mlp!r}")
        whole = tuple(LayerShape(l.expanded, l.exact, self.kv_heads if l.groups is None else l.groups,
                                 self.head_dim if l.dims is None else l.dims) for l in self.layers)
        object.__setattr__(self, "layers", whole)

    @classmethod
    def for_model(cls, *, hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int,
                  layers: tuple[LayerShape, ...], activation: str, mlp: str = "gated") -> "CircuitShape":
        """The spec's circuit for a model of these dimensions: everything else (k, L, m, orders,
        encoder, scales) is pinned by the fingerprint spec and this module, never by a bundle."""
        if not layers:
            raise ValueError("the spec reads every layer of the model, and this shape has none")
        layers = tuple(LayerShape(l.expanded, l.exact) for l in layers)
        return cls(k=fspec.K_TOKENS, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                   intermediate=intermediate, layers=layers, m=fspec.M_DIM, activation=activation,
                   mlp=mlp, encoder=fspec.ENCODER)

    def departures_from_spec(self) -> list[str]:
        """What this shape sets differently from the pinned spec (empty for the spec's own circuit)."""
        try:
            canonical = CircuitShape.for_model(hidden=self.hidden, heads=self.heads, kv_heads=self.kv_heads,
                                               head_dim=self.head_dim, intermediate=self.intermediate,
                                               layers=self.layers, activation=self.activation, mlp=self.mlp)
        except ValueError as exc:
            return [str(exc)]
        names = {"k": "k (selected tokens)", "m": "m (length of v)"}
        return [f"{names.get(f, f)} = {getattr(self, f)!r} (the spec's is {getattr(canonical, f)!r})"
                for f in self.__dataclass_fields__ if getattr(self, f) != getattr(canonical, f)]

    # -- identity -------------------------------------------------------------------------
    def to_json(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(l) for l in self.layers]
        d["orders"] = list(self.orders)
        d["extra"] = list(self.extra)
        if self.mlp == "gated":  # the field came with plain MLPs: gated shapes keep their keys
            del d["mlp"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CircuitShape":
        d = dict(d)
        d["layers"] = tuple(LayerShape(**l) for l in d["layers"])
        d["orders"] = tuple(d["orders"])
        d["extra"] = tuple(d.get("extra", ()))
        return cls(**d)

    def key(self) -> str:
        """Cache key: a hash of everything that decides the circuit (incl. the ezkl version)."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    # -- inputs ---------------------------------------------------------------------------
    def input_specs(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every committed circuit input, in the ONNX input order."""
        h, r = self.hidden, self.heads // self.kv_heads
        out: list[tuple[str, tuple[int, ...]]] = [("tokens", (self.k, h))]
        for i, l in enumerate(self.layers):
            p = f"l{i}."
            q, kv = l.groups * r * l.dims, l.groups * l.dims
            if "qk" in l.terms:
                out += [(p + "attn_gain", (h,)), (p + "q", (q, h)), (p + "k", (kv, h)), (p + "v", (kv, h)),
                        (p + "o", (h, q))]
            if "mlp" in l.terms:
                out += [(p + "mlp_gain", (h,))]
            # a plain MLP has no gate: its first projection (the release's in_weight) is up_s/up_f
            gate = self.mlp == "gated"
            if l.expanded:
                out += [(p + "gate_s", (l.expanded, h))] * gate + [
                        (p + "up_s", (l.expanded, h)), (p + "coeffs_s", (len(self.orders), h, l.expanded)),
                        (p + "lsq_s", (len(self.orders), l.expanded))]
            if l.exact:
                out += [(p + "gate_f", (l.exact, h))] * gate + [(p + "up_f", (l.exact, h)),
                                                               (p + "down_f", (h, l.exact))]
        return out

    def n_inputs(self) -> int:
        return len(self.input_specs())

    def n_terms(self) -> int:
        return sum(len(l.terms) for l in self.layers)

    def weight_elements(self) -> int:
        """Elements of release tensors the circuit reads (the public per-neuron weights excluded)."""
        n = 0
        for name, shape in self.input_specs():
            if not name.endswith("lsq_s"):
                size = 1
                for s in shape:
                    size *= s
                n += size
        return n

    # -- cost -----------------------------------------------------------------------------
    def estimate_rows(self) -> int:
        """Circuit rows predicted from the shapes alone (fitted on ezkl 23.0.5 measurements).

        Committed inputs cost one cell each; einsums cost about one cell per output element
        (Freivalds' check, no rescaling of intermediates); M_f of each layer is rescaled
        once (≈ 47 cells per element). Measured: embedded model 104,496 rows, estimate ~107 K.
        """
        cells = self.weight_elements() + sum(
            len(self.orders) * l.expanded for l in self.layers)
        r = self.heads // self.kv_heads
        for l in self.layers:
            q, kv = l.groups * r * l.dims, l.groups * l.dims
            per_neuron = 3 if self.mlp == "gated" else 2  # k-row projections per neuron
            outs = self.k * (2 * q + 2 * kv) + per_neuron * self.k * (l.expanded + l.exact) + len(l.terms) * self.k * self.k
            cells += 2 * outs
        cells += sum("mlp" in l.terms for l in self.layers) * self.k * self.k * 47  # M_f is the one term rescaled
        cells += 20_000
        return cells // self.num_inner_cols
