"""The in-circuit fingerprint computation as a torch module (exported to ONNX, compiled by ezkl).

It computes exactly the fingerprint of `fingerprint.extract` (same terms, same z-scores, same
encoder), arranged for a cheap circuit:

* Norm gains are folded inside the einsums (`einsum('ia,a,qa->iq', X, g, W)` = X·(W·diag g)ᵀ):
  no gain-folded weight matrix is ever materialised.
* ezkl proves einsums with Freivalds' check, so the cost is the size of the outputs, not the
  number of multiply-adds. Every intermediate is therefore a k-row matrix (k tokens).
  (A three-operand einsum with a shared free index, e.g. 'is,is,js->ij', is NOT cheap in
  ezkl 23.0.5: 11 M rows instead of 30 K; the Hadamard product is materialised instead.)
* Intermediates are not rescaled (scale_rebase_multiplier is large): a rescale costs ~47
  cells per element. Only the 3·L final k×k terms are rescaled, before their z-scores.
* W_down of Taylor-expanded neurons is rebuilt from the released coefficient tensors:
  W_d[:, j] = Σ_n w_{n,j} Θ_n[:, j], w_{n,j} = c_n(a_j) / Σ_n c_n(a_j)² (least squares over the
  orders in `shape.orders`). The w are public (the verifier computes them from its copy of the
  anchors), committed with everything else.
* Each committed tensor is its own ONNX input (one polycommit commitment each). Passing one
  flat input and slicing it in the graph cost 1.56 M rows instead of 104 K (measured).
  Stacking the layers into fewer inputs does not pay either: an einsum whose batch index is
  shared by both operands ('lia,lqa->liq') is not Freivalds-cheap (einsum columns 2.96 M
  instead of 192 K; the embedded model calibrates to logrows 20 instead of 17), and slicing a
  committed input copies it (about one cell per element).
* The public output is the 3·L invariant terms themselves (k×k each). z-scoring and the
  (linear, public) encoder are a fixed public function of them, v = zscore(P·zscore(M)),
  which the verifier recomputes with numpy (`circuits.finish.v_from_terms`) and compares with
  the bundle's v. Measured on ezkl 23.0.5: the in-circuit variance/rsqrt fails to synthesise
  at the scales the unrescaled terms need ("General synthesis error"), and the constant
  64×1536 encoder matvec alone costs 49,952 rows with P as fixed parameters (the terms cost
  104,496 at hidden 64, so it would double the proof there). The terms are
  computable by anyone holding the (public) release, so publishing them reveals nothing new.
"""

from __future__ import annotations

import torch

from circuits.spec import CircuitShape


class FingerprintCircuit(torch.nn.Module):
    def __init__(self, shape: CircuitShape):
        super().__init__()
        self.shape = shape

    def terms(self, tokens: torch.Tensor, *layer_inputs: torch.Tensor) -> list[torch.Tensor]:
        """The 3·L raw k×k invariant terms (M_a, M_b, M_f per layer)."""
        s = self.shape
        k, G, r, d = s.k, s.kv_heads, s.heads // s.kv_heads, s.head_dim
        X = tokens
        per = 13
        out = []
        for i in range(len(s.layers)):
            (ga, wq, wk, wv, wo, gm, gate_s, up_s, coeffs_s, lsq_s, gate_f, up_f,
             down_f) = layer_inputs[i * per:(i + 1) * per]
            Q = torch.einsum("ia,a,qa->iq", X, ga, wq).reshape(k, G, r, d)
            K = torch.einsum("ia,a,qa->iq", X, ga, wk).reshape(k, G, d)
            V = torch.einsum("ia,a,qa->iq", X, ga, wv).reshape(k, G, d)
            O = torch.einsum("ia,aq->iq", X, wo).reshape(k, G, r, d)
            m_a = torch.einsum("igrd,jgd->ij", Q, K)
            m_b = torch.einsum("igd,jgrd->ij", V, O)
            m_f = None
            if s.layers[i].expanded:
                Gs = torch.einsum("ia,a,sa->is", X, gm, gate_s)
                Us = torch.einsum("ia,a,sa->is", X, gm, up_s)
                Ds = (torch.einsum("ia,nas->ins", X, coeffs_s) * lsq_s).sum(1)
                m_f = torch.einsum("is,js->ij", Gs * Us, Ds)
            if s.layers[i].exact:
                Gf = torch.einsum("ia,a,sa->is", X, gm, gate_f)
                Uf = torch.einsum("ia,a,sa->is", X, gm, up_f)
                Df = torch.einsum("ia,as->is", X, down_f)
                f = torch.einsum("is,js->ij", Gf * Uf, Df)
                m_f = f if m_f is None else m_f + f
            out += [m_a, m_b, m_f]
        return out

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, at = [], 0
        for _, shp in self.shape.input_specs():
            n = 1
            for d in shp:
                n *= d
            out.append(flat[at:at + n].reshape(shp))
            at += n
        return out

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Public output: the 3·L raw invariant terms, flattened and concatenated (layer-major,
        M_a, M_b, M_f per layer). v = encoder(zscore(terms)) is computed from them by
        `circuits.finish.v_from_terms` (numpy) on both sides."""
        return torch.cat([M.reshape(-1) for M in self.terms(*inputs)])


def float_outputs(shape: CircuitShape, inputs: list) -> torch.Tensor:
    """The circuit's public outputs computed in float64 (reference for the proven ones)."""
    mod = FingerprintCircuit(shape).double()
    with torch.no_grad():
        return mod(*[torch.as_tensor(a, dtype=torch.float64) for a in inputs])


def float_fingerprint(shape: CircuitShape, projection: torch.Tensor, inputs: list):
    """v computed in float64 by the same graph (numpy array)."""
    from circuits.finish import v_from_terms

    return v_from_terms(float_outputs(shape, inputs).numpy(), shape, projection.double().numpy())
