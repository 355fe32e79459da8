"""The effective MLP weights of a release, by the published algebraic inversion.

Every released Θ_n[:, j] is W_down[:, j] times the scalar c_n(t_j) = act^{(n)}(t_j)/n!, where
t_j is the neuron's anchor (for a gated MLP t_j is the released anchor; for a plain MLP it is
anchor + the unreleased bias b_j). So, for each expanded neuron j:
  * gated: W_down[:, j] = Σ_n c_n Θ_n[:, j] / Σ_n c_n²  (least squares over all orders, exact);
  * plain: t_j is the t that makes c(t) best explain the N+1 columns (a 1-D search per neuron
    on the Gram matrix of the columns), then as above, and b_j = t_j − anchor_j.
This is what the fingerprint needs (the function-defining weights) and what an attacker gets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from taylor import jets
from taylor.release import ReleaseReader

if TYPE_CHECKING:  # torch only where tensors are built: circuits.inputs (numpy-only) calls solve_anchors
    import torch


@dataclass
class EffectiveMLP:
    """One block's MLP as ordinary weights, nn.Linear convention, original neuron order, fp32."""

    gate: torch.Tensor | None   # (I, d), gated only
    up: torch.Tensor            # (I, d): gated up-projection, or a plain MLP's first projection
    up_bias: torch.Tensor | None  # (I,) plain MLP first-layer bias (expanded entries recovered)
    down: torch.Tensor          # (d, I)
    down_bias: torch.Tensor | None  # (d,)
    fit_residual: np.ndarray    # (|S|,) relative residual of the rank-1 fit per expanded neuron


def _reader(release) -> ReleaseReader:
    return release if isinstance(release, ReleaseReader) else ReleaseReader(release)


def _gram(theta: np.ndarray) -> np.ndarray:
    """(N+1, d, S) → per-neuron Gram matrices (S, N+1, N+1)."""
    return np.einsum("nds,mds->snm", theta, theta, optimize=True)


def _fit_objective(gram: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Explained fraction of each neuron's column energy by direction c: cᵀGc / (|c|² tr G). c: (N+1, S, T)."""
    num = np.einsum("nst,snm,mst->st", c, gram, c, optimize=True)
    den = np.einsum("nst,nst->st", c, c) * np.trace(gram, axis1=1, axis2=2)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, 0.0)


def solve_anchors(activation: str, theta: np.ndarray, lo: float = -12.0, hi: float = 12.0,
                  grid: int = 481, rounds: int = 6) -> np.ndarray:
    """Per neuron, the argument t whose coefficient vector c(t) best explains its Θ columns."""
    order = theta.shape[0] - 1
    gram = _gram(theta.astype(np.float64))
    s = gram.shape[0]
    ts = np.linspace(lo, hi, grid)
    c = jets.activation_jet(activation, ts, order)  # (N+1, T)
    score = _fit_objective(gram, np.broadcast_to(c[:, None, :], (order + 1, s, grid)))
    best = ts[np.argmax(score, axis=1)]
    step = ts[1] - ts[0]
    for _ in range(rounds):
        local = best[:, None] + np.linspace(-step, step, 21)[None, :]  # (S, 21)
        c = jets.activation_jet(activation, local, order)  # (N+1, S, 21)
        best = local[np.arange(s), np.argmax(_fit_objective(gram, c), axis=1)]
        step /= 10.0
    return best


def expansion_points(activation: str, anchor: np.ndarray, theta: np.ndarray, folded_bias: bool) -> np.ndarray:
    """Where each expanded neuron's series is taken (fp64): its anchor, or, where conversion folded
    an unreleased first-layer bias into the anchor, the point that best explains its Θ columns."""
    anchor = np.asarray(anchor, dtype=np.float64)
    if not folded_bias or anchor.size == 0:
        return anchor
    return solve_anchors(activation, theta)


def recover_down(activation: str, theta: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares W_down[:, S] from Θ (N+1, d, S) given the anchors t (S,); and the relative residual."""
    theta = theta.astype(np.float64)
    c = jets.activation_jet(activation, t, theta.shape[0] - 1)  # (N+1, S)
    w = np.einsum("nds,ns->ds", theta, jets.lsq_weights(activation, t, range(theta.shape[0])))
    resid = theta - c[:, None, :] * w[None]
    norm = np.sqrt(np.einsum("nds,nds->s", theta, theta))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(norm > 0, np.sqrt(np.einsum("nds,nds->s", resid, resid)) / norm, 0.0)
    return w, rel


def effective_mlp(release: ReleaseReader | str | os.PathLike, layer: int) -> EffectiveMLP:
    """Block `layer`'s MLP reconstructed from the release (exact neurons as released)."""
    import torch

    r = _reader(release)
    m = r.mlp(layer, torch.float32)
    s_idx, f_idx = torch.from_numpy(r.expanded(layer)), torch.from_numpy(r.exact(layer))
    d, inter = r.arch.dims.hidden, r.arch.dims.intermediate
    theta = m["coeffs"].double().numpy()
    anchor = m["anchor"].double().numpy()
    t = expansion_points(r.activation, anchor, theta, r.layout.in_bias)
    w_s, resid = recover_down(r.activation, theta, t)

    def scatter_rows(expanded_rows, exact_rows):
        out = torch.empty((inter,) + tuple(exact_rows.shape[1:]), dtype=torch.float32)
        out[s_idx], out[f_idx] = expanded_rows.float(), exact_rows.float()
        return out

    down = torch.empty((d, inter), dtype=torch.float32)
    down[:, s_idx] = torch.from_numpy(w_s).float()
    down[:, f_idx] = m["exact_down_weight"]
    in_w = scatter_rows(m["in_weight"], m["exact_in_weight"])
    up_bias = None
    if r.layout.in_bias:
        up_bias = scatter_rows(torch.from_numpy(t - anchor), m["exact_in_bias"])
    if r.layout.gated:
        gate, up = in_w, scatter_rows(m["up_weight"], m["exact_up_weight"])
    else:
        gate, up = None, in_w
    return EffectiveMLP(gate=gate, up=up, up_bias=up_bias, down=down,
                        down_bias=m.get("down_bias"), fit_residual=resid)


def effective_down(release: ReleaseReader | str | os.PathLike, layer: int) -> torch.Tensor:
    """Block `layer`'s effective W_down, shape (hidden, intermediate), original neuron order, fp32.

    Exact neurons' columns are read as released; expanded neurons' columns are recovered from
    the Taylor coefficients (see the module docstring).
    """
    return effective_mlp(release, layer).down
