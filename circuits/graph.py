"""The fingerprint circuit as an ONNX graph, built from the shape alone with `onnx.helper`.

torch-free on purpose: the prover compiles this graph, and the verifier rebuilds the very same
graph from the bundle's shape to derive the verification key itself instead of trusting the
bundle's (`verifier.verify`). It is node for node what `torch.onnx.export` makes of
`circuits.model.FingerprintCircuit` (the float reference; a test checks they agree):

    per layer i, with X the k selected embedding rows,
      Q = X·diag(g_a)·W_qᵀ, K, V likewise, O = X·W_o      (k-row intermediates: cheap in ezkl)
      M_a = Σ_g,r,d Q K ,  M_b = Σ_g,r,d V O
      D_S = Σ_n (X·Θ_n) ⊙ w_n                            (W_down of expanded neurons, rebuilt)
      M_f = (G_S ⊙ U_S)·D_Sᵀ + (G_F ⊙ U_F)·(X·W_d,F)ᵀ
    output: concat of the 3·L k×k terms (layer-major, M_a, M_b, M_f).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from circuits.spec import CircuitShape

OPSET = 17
OUTPUT = "terms"


class _Graph:
    def __init__(self):
        self.nodes: list = []
        self.n = 0

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.n += 1
        out = f"/{op_type}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def const(self, values) -> str:
        self.n += 1
        out = f"/Constant_{self.n}"
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(
            np.asarray(values, dtype=np.int64), name=out)))
        return out

    def einsum(self, equation: str, *inputs: str) -> str:
        return self.op("Einsum", list(inputs), equation=equation)

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        return self.op("Reshape", [x, self.const(shape)], allowzero=0)


def build_onnx(shape: CircuitShape) -> onnx.ModelProto:
    """The circuit's ONNX model for `shape` (inputs in `shape.input_specs()` order)."""
    s = shape
    k, G, r, d = s.k, s.kv_heads, s.heads // s.kv_heads, s.head_dim
    specs = s.input_specs()
    g = _Graph()
    X = "tokens"
    per = (len(specs) - 1) // len(s.layers)
    terms: list[str] = []
    for i, layer in enumerate(s.layers):
        (ga, wq, wk, wv, wo, gm, gate_s, up_s, coeffs_s, lsq_s, gate_f, up_f,
         down_f) = [name for name, _ in specs[1 + i * per:1 + (i + 1) * per]]
        Q = g.reshape(g.einsum("ia,a,qa->iq", X, ga, wq), (k, G, r, d))
        K = g.reshape(g.einsum("ia,a,qa->iq", X, ga, wk), (k, G, d))
        V = g.reshape(g.einsum("ia,a,qa->iq", X, ga, wv), (k, G, d))
        O = g.reshape(g.einsum("ia,aq->iq", X, wo), (k, G, r, d))
        m_a = g.einsum("igrd,jgd->ij", Q, K)
        m_b = g.einsum("igd,jgrd->ij", V, O)
        parts = []
        if layer.expanded:
            Gs = g.einsum("ia,a,sa->is", X, gm, gate_s)
            Us = g.einsum("ia,a,sa->is", X, gm, up_s)
            Ds = g.op("ReduceSum", [g.op("Mul", [g.einsum("ia,nas->ins", X, coeffs_s), lsq_s]), g.const([1])],
                      keepdims=0)
            parts.append(g.einsum("is,js->ij", g.op("Mul", [Gs, Us]), Ds))
        if layer.exact:
            Gf = g.einsum("ia,a,sa->is", X, gm, gate_f)
            Uf = g.einsum("ia,a,sa->is", X, gm, up_f)
            Df = g.einsum("ia,as->is", X, down_f)
            parts.append(g.einsum("is,js->ij", g.op("Mul", [Gf, Uf]), Df))
        m_f = parts[0] if len(parts) == 1 else g.op("Add", parts)
        terms += [m_a, m_b, m_f]
    flat = [g.reshape(t, (k * k,)) for t in terms]
    g.nodes.append(helper.make_node("Concat", flat, [OUTPUT], axis=0))
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims)) for name, dims in specs]
    n_out = 3 * len(s.layers) * k * k
    graph = helper.make_graph(g.nodes, "zkfp_fingerprint", inputs,
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [n_out])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="zkfp", producer_version=s.version)
    onnx.checker.check_model(model)
    return model
