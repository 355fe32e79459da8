"""The fingerprint's two circuits as ONNX graphs, built from the shape alone with `onnx.helper`.

torch-free on purpose: the prover compiles these graphs, and the verifier rebuilds the very same
graphs from the bundle's shape to derive the verification keys itself instead of trusting the
bundle's (`verifier.verify`). The terms graph is also the float reference of the computation
(`reference_terms`, onnx's reference evaluator).

The terms circuit (`build_onnx`; inputs: the release tensors, committed; output: the terms,
committed, never public):

    per layer i, with X the k selected embedding rows,
      Q = X·diag(g_a)·W_qᵀ, K, V likewise, O = X·W_o      (k-row intermediates: cheap in ezkl)
      M_a = Σ_g,r,d Q K ,  M_b = Σ_g,r,d V O
      D_S = Σ_n (X·Θ_n) ⊙ w_n                            (W_down of expanded neurons, rebuilt)
      M_f = (G_S ⊙ U_S)·D_Sᵀ + (G_F ⊙ U_F)·(X·W_d,F)ᵀ       (gated MLP; G = X·diag(g_m)·W_gateᵀ, U likewise)
      M_f = U_S·D_Sᵀ + U_F·(X·W_d,F)ᵀ                     (plain MLP, GPT-2 / GPT-NeoX: activation-free)
    For LayerNorm families X is the centred rows X·C (C = I − 11ᵀ/d), computed from the release
    like the per-neuron weights w_n: with X centred, X·(W·diag(g)·C)ᵀ = X·diag(g)·Wᵀ and
    (C·W_out)ᵀ·Xᵀ = W_outᵀ·Xᵀ, so the canonical form of fingerprint.invariants needs nothing more.
    output: concat of the 3·L k×k terms (layer-major, M_a, M_b, M_f).

The encoder circuit (`build_encoder_onnx`; inputs: the terms, committed — the same commitment as
the terms circuit's output, or the partial terms of several chunks, summed first — and the
prover's u_t per term, committed; output: public):
      c_t = (M_t − mean M_t)/2^shift over M_t's off-diagonal entries (the spec reads no diagonal),
      z_t = c_t·u_t²,   y_l = P·concat(z_t of layer l),   check_t = z_t·z_t
The public values are y (m per layer, one P for every layer) and the 3·L checks. An honest prover
gives u_t² = 1/‖c_t‖, so every check is 1; the verifier requires |check_t − 1| ≤ 2^-10 and takes
v_l = zscore(y_l) for each layer. Then z_t is
zscore(off-diagonal M_t)/√(k(k−1)), up to a per-term factor within 2^-11 of 1: v is HuRef's
encoding of the z-scored terms (Zeng et al., 2024) without their diagonals, and the terms stay private. The factor is u_t², not a free
s_t: a check cannot tell s_t from −s_t, and a negative s_t would flip a term's sign in v. (ezkl 23.0.5's Sqrt/Reciprocal
on these scales failed its constraints in every variant measured, hence a checked private 1/σ;
multiplying by s_t before squaring keeps every product inside the range checks.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from circuits.projection import load_projection
from circuits.spec import CircuitShape
from fingerprint.spec import off_diagonal  # pure Python

OPSET = 17
OUTPUT = "terms"
ENCODER_OUTPUT = "y_and_checks"
ROOT = "root_inv_sigma"  # the encoder's private input u_t, with 1/σ_t = u_t²


class _Graph:
    def __init__(self):
        self.nodes: list = []
        self.n = 0

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.n += 1
        out = f"/{op_type}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def const(self, values, dtype=np.int64) -> str:
        self.n += 1
        out = f"/Constant_{self.n}"
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(
            np.asarray(values, dtype=dtype), name=out)))
        return out

    def einsum(self, equation: str, *inputs: str) -> str:
        return self.op("Einsum", list(inputs), equation=equation)

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        return self.op("Reshape", [x, self.const(shape)], allowzero=0)

    def fconst(self, values) -> str:
        return self.const(values, np.float32)


def _model(g: _Graph, inputs: list[tuple[str, tuple[int, ...]]], output: str, n_out: int,
           name: str, version: str) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(d)) for n, d in inputs],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [n_out])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="zkfp", producer_version=version)
    onnx.checker.check_model(model)
    return model


def build_onnx(shape: CircuitShape, per_head: bool = False) -> onnx.ModelProto:
    """A terms circuit's ONNX model for `shape` (inputs in `shape.input_specs()` order): the
    model's whole terms, or a chunk's partial terms when `shape` is a chunk's (circuits.plan).

    `per_head`: each attention layer outputs its query heads' own terms instead of their sums,
    A_0, B_0, A_1, B_1, … (head h = g·r + j reads KV head g, as fingerprint.invariants.expand_kv),
    then the MLP term: the per-head units of the planned zkfp-fp/4 (docs/fp4-plan.md, D2), not yet
    the spec's circuit."""
    s = shape
    k, r = s.k, s.heads // s.kv_heads
    g = _Graph()
    X = "tokens"
    terms: list[tuple[str, int]] = []  # (tensor, how many k×k terms it holds)
    for i, layer in enumerate(s.layers):
        p = f"l{i}."
        if "qk" in layer.terms:
            G, d = layer.groups, layer.dims
            Q = g.reshape(g.einsum("ia,a,qa->iq", X, p + "attn_gain", p + "q"), (k, G, r, d))
            K = g.reshape(g.einsum("ia,a,qa->iq", X, p + "attn_gain", p + "k"), (k, G, d))
            V = g.reshape(g.einsum("ia,a,qa->iq", X, p + "attn_gain", p + "v"), (k, G, d))
            O = g.reshape(g.einsum("ia,aq->iq", X, p + "o"), (k, G, r, d))
            if per_head:  # (G·r, 2, k²): head-major, A_h then B_h
                A, B = g.einsum("igrd,jgd->grij", Q, K), g.einsum("igd,jgrd->grij", V, O)
                terms.append((g.op("Concat", [g.reshape(A, (G * r, 1, k * k)), g.reshape(B, (G * r, 1, k * k))],
                                   axis=1), 2 * G * r))
            else:
                terms += [(g.einsum("igrd,jgd->ij", Q, K), 1), (g.einsum("igd,jgrd->ij", V, O), 1)]
        if "mlp" not in layer.terms:
            continue
        def neurons(block: str) -> list[str]:  # G (gated only) and U: X·diag(g_m)·Wᵀ
            roles = ("gate_", "up_") if s.mlp == "gated" else ("up_",)
            return [g.einsum("ia,a,sa->is", X, p + "mlp_gain", p + r + block) for r in roles]

        def product(GU: list[str]) -> str:
            return GU[0] if len(GU) == 1 else g.op("Mul", GU)

        parts = []
        if layer.expanded:
            GUs = neurons("s")
            Ds = g.op("ReduceSum", [g.op("Mul", [g.einsum("ia,nas->ins", X, p + "coeffs_s"), p + "lsq_s"]),
                                    g.const([1])], keepdims=0)
            parts.append(g.einsum("is,js->ij", product(GUs), Ds))
        if layer.exact:
            GUf = neurons("f")
            Df = g.einsum("ia,as->is", X, p + "down_f")
            parts.append(g.einsum("is,js->ij", product(GUf), Df))
        terms.append((parts[0] if len(parts) == 1 else g.op("Add", parts), 1))
    flat = [g.reshape(t, (n * k * k,)) for t, n in terms]
    g.nodes.append(helper.make_node("Concat", flat, [OUTPUT], axis=0))
    return _model(g, s.input_specs(), OUTPUT, sum(n for _, n in terms) * k * k, "zkfp_terms", s.version)


def _summed(g: _Graph, part, names: list[str]) -> str:
    """The input partials summed term by term: a (len(output_terms), k²) tensor. One partial
    holding every term in order is just reshaped (the unchunked model)."""
    kk, out = part.shape.k ** 2, part.output_terms
    if len(part.layout) == 1 and tuple(part.layout[0]) == out:
        return g.reshape(names[0], (len(out), kk))
    rows = [g.reshape(n, (len(lay), kk)) for n, lay in zip(names, part.layout)]
    summed = []
    for t in out:
        pieces = [g.op("Slice", [rows[c], g.const([j]), g.const([j + 1]), g.const([0])])
                  for c, lay in enumerate(part.layout) for j, u in enumerate(lay) if u == t]
        total = pieces[0]
        for piece in pieces[1:]:
            total = g.op("Add", [total, piece])
        summed.append(total)
    return summed[0] if len(summed) == 1 else g.op("Concat", summed, axis=0)


def _off_diagonal(g: _Graph, M: str, k: int) -> str:
    """(T, k²) terms → (T, k(k−1)), each term's off-diagonal entries in order (spec.off_diagonal),
    by a Gather with constant indices. (Two Slices and Reshapes select the same entries, but ezkl
    23.0.5's gen_settings then gave 51,459 or 51,461 rows for one graph from run to run, and a
    verifier rebuilding the circuit must get the prover's settings exactly.)"""
    return g.op("Gather", [M, g.const(off_diagonal(k))], axis=1)


def build_sum_onnx(part) -> onnx.ModelProto:
    """A sum chunk: its input partials added term by term (exact: no product, no rescale)."""
    io = part.committed_io()
    g = _Graph()
    total = _summed(g, part, [n for n, _ in io["inputs"]])
    n_out = io["outputs"][0][1][0]
    g.nodes.append(helper.make_node("Reshape", [total, g.const((n_out,))], [OUTPUT], allowzero=0))
    return _model(g, io["inputs"], OUTPUT, n_out, "zkfp_sum", part.shape.version)


def _normalised(g: _Graph, M: str, shift: int) -> str:
    """(T, n) off-diagonal terms → z_t = (M_t − mean M_t)/2^shift · u_t² (see the module docstring)."""
    scaled = g.op("Div", [M, g.fconst(2.0 ** shift)])
    c = g.op("Sub", [scaled, g.op("ReduceMean", [scaled], axes=[1], keepdims=1)])
    s_t = g.op("Mul", [ROOT, ROOT])  # 1/σ_t = u_t², never negative: no sign of a term to flip
    return g.einsum("ti,t->ti", c, s_t)


def build_encoder_onnx(part) -> onnx.ModelProto:
    """An encoder circuit's ONNX model (see the module docstring): every layer's, or those of
    `part.layers` when the model's encoder is split by groups of layers (circuits.plan)."""
    s = part.shape
    T, n = len(part.output_terms), len(off_diagonal(s.k))
    L = part.encoded_layers
    P = load_projection(s.k, s.m).reshape(s.m, 3, n)  # one projection for every layer
    io = part.committed_io()
    g = _Graph()
    z = _normalised(g, _off_diagonal(g, _summed(g, part, [nm for nm, _ in io["inputs"][:-1]]), s.k), s.term_shift)
    y = g.reshape(g.einsum("mci,lci->lm", g.fconst(P), g.reshape(z, (L, 3, n))), (L * s.m,))
    check = g.einsum("ti,ti->t", z, z)
    g.nodes.append(helper.make_node("Concat", [y, check], [ENCODER_OUTPUT], axis=0))
    return _model(g, io["inputs"], ENCODER_OUTPUT, L * s.m + T, "zkfp_encoder", s.version)


def build_units_encoder_onnx(shape: CircuitShape, units: tuple[str, ...], P_head: np.ndarray,
                             P_mlp: np.ndarray) -> onnx.ModelProto:
    """The planned zkfp-fp/4 encoder (docs/fp4-plan.md, D6), not yet the spec's: one committed input
    of per-head terms (`build_onnx(per_head=True)`'s order) for `units`, each "head" (its two terms,
    A_h, B_h) or "mlp" (one term), and the prover's u_t. Every term is z-scored as in
    `build_encoder_onnx`, then each head unit is projected by P_head (m_h × 2k(k−1)) and each MLP
    unit by P_mlp (m_f × k(k−1)). Public: [y of the heads (m_h each), y of the MLPs (m_f each),
    the checks (one a term)]. Rows are picked by constant-index Gathers, as the off-diagonal is."""
    if not units or set(units) - {"head", "mlp"}:
        raise ValueError(f"units must be 'head' or 'mlp', not {units!r}")
    k, n = shape.k, len(off_diagonal(shape.k))
    spans, t = [], 0
    for u in units:
        spans.append(range(t, t + (2 if u == "head" else 1)))
        t += len(spans[-1])
    heads = [i for u, span in zip(units, spans) if u == "head" for i in span]
    mlps = [span[0] for u, span in zip(units, spans) if u == "mlp"]
    g = _Graph()
    z = _normalised(g, _off_diagonal(g, g.reshape("partial0", (t, k * k)), k), shape.term_shift)
    outs = []
    for rows, P, per in ((heads, P_head, 2), (mlps, P_mlp, 1)):
        if rows:
            picked = g.reshape(g.op("Gather", [z, g.const(rows)], axis=0), (len(rows) // per, per, n))
            y = g.einsum("mci,uci->um", g.fconst(np.asarray(P).reshape(len(P), per, n)), picked)
            outs.append(g.reshape(y, (len(rows) // per * len(P),)))
    outs.append(g.einsum("ti,ti->t", z, z))
    g.nodes.append(helper.make_node("Concat", outs, [ENCODER_OUTPUT], axis=0))
    n_out = len(heads) // 2 * len(P_head) + len(mlps) * len(P_mlp) + t
    return _model(g, [("partial0", (t * k * k,)), (ROOT, (t,))], ENCODER_OUTPUT, n_out, "zkfp_units_encoder",
                  shape.version)


def build_part(part) -> onnx.ModelProto:
    """The ONNX model of one circuit of a plan (circuits.plan.Part)."""
    if part.kind == "terms":
        return build_onnx(part.shape)
    return {"sum": build_sum_onnx, "encoder": build_encoder_onnx}[part.kind](part)


def reference_terms(shape: CircuitShape, inputs: list, per_head: bool = False) -> np.ndarray:
    """The terms computed in float by the terms circuit's own graph (onnx's reference evaluator)."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: np.asarray(a, dtype=np.float32) for (name, _), a in zip(shape.input_specs(), inputs)}
    return np.asarray(ReferenceEvaluator(build_onnx(shape, per_head)).run(None, feeds)[0], dtype=np.float64)
