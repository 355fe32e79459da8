"""Truncated power series ("jets") in fp64 numpy, and the Taylor coefficients of MLP activations.

A jet of order K is an array of shape (K+1, ...): entry n holds f^{(n)}(a)/n!, so the 1/n!
is folded in from the start and no factorial or raw high derivative is ever formed.
Arithmetic on jets is exact power-series arithmetic truncated at order K, which gives the
coefficients of SiLU, erf-GELU and tanh-GELU from one small set of rules
(product, exp, reciprocal, integral) instead of a hand-derived recurrence per activation.
"""

from __future__ import annotations

import math

import numpy as np

GUARD_ORDER = 2          # beyond the guard radius only orders ≤ 2 are evaluated
GUARD_SCALE = 0.75       # guard radius = 0.75 × the series' radius of convergence at the anchor

ACTIVATIONS = ("silu", "gelu", "gelu_tanh")


def variable(a: np.ndarray, order: int) -> np.ndarray:
    """The jet of x about x = a: a + 1·δ."""
    a = np.asarray(a, dtype=np.float64)
    jet = np.zeros((order + 1,) + a.shape)
    jet[0] = a
    if order >= 1:
        jet[1] = 1.0
    return jet


def mul(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Cauchy product, truncated."""
    out = np.zeros_like(f)
    for n in range(f.shape[0]):
        out[n] = np.sum(f[: n + 1] * g[n::-1], axis=0)
    return out


def exp(g: np.ndarray) -> np.ndarray:
    """exp of a jet: from f' = g' f, n f_n = sum_{k=1..n} k g_k f_{n-k}."""
    f = np.zeros_like(g)
    f[0] = np.exp(g[0])
    for n in range(1, g.shape[0]):
        k = np.arange(1, n + 1).reshape((-1,) + (1,) * (g.ndim - 1))
        f[n] = np.sum(k * g[1 : n + 1] * f[n - 1 :: -1][:n], axis=0) / n
    return f


def reciprocal(g: np.ndarray) -> np.ndarray:
    """1/g: h_0 = 1/g_0, h_n = -(sum_{k=1..n} g_k h_{n-k}) / g_0."""
    h = np.zeros_like(g)
    h[0] = 1.0 / g[0]
    for n in range(1, g.shape[0]):
        h[n] = -np.sum(g[1 : n + 1] * h[n - 1 :: -1][:n], axis=0) / g[0]
    return h


def sigmoid(g: np.ndarray) -> np.ndarray:
    """1/(1+exp(-g)), with the constant term clipped so exp never overflows (σ is flat there)."""
    g = g.copy()
    g[0] = np.clip(g[0], -60.0, 60.0)
    one_plus = exp(-g)
    one_plus[0] += 1.0
    return reciprocal(one_plus)


def activation_jet(activation: str, a: np.ndarray, order: int) -> np.ndarray:
    """Taylor coefficients c_n = act^{(n)}(a)/n!, n = 0..order, shape (order+1, *a.shape), fp64."""
    x = variable(a, order)
    if activation == "silu":
        return mul(x, sigmoid(x))
    if activation == "gelu":  # x Φ(x), Φ' = φ = exp(-x²/2)/sqrt(2π)
        phi = exp(-0.5 * mul(x, x)) / math.sqrt(2.0 * math.pi)
        cdf = np.zeros_like(x)
        cdf[0] = 0.5 * (1.0 + _erf(np.asarray(a, dtype=np.float64) / math.sqrt(2.0)))
        cdf[1:] = phi[:-1] / np.arange(1, order + 1).reshape((-1,) + (1,) * (x.ndim - 1))
        return mul(x, cdf)
    if activation == "gelu_tanh":  # 0.5 x (1 + tanh(u)) = x σ(2u), u = sqrt(2/π)(x + 0.044715 x³)
        u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * mul(x, mul(x, x)))
        return mul(x, sigmoid(2.0 * u))
    raise ValueError(f"unknown activation {activation!r}; known: {ACTIVATIONS}")


def lsq_weights(activation: str, anchor: np.ndarray, orders) -> np.ndarray:
    """w_{n,j} = c_n(a_j) / Σ_n c_n(a_j)² over `orders` (fp64, (len(orders), S)): the least-squares
    weights that rebuild a down column from its Taylor copies, W_d[:, j] = Σ_n w_{n,j} Θ_n[:, j]."""
    orders = list(orders)
    c = activation_jet(activation, np.asarray(anchor, dtype=np.float64), max(orders))[orders]
    return c / np.maximum((c * c).sum(axis=0), 1e-300)


_erf = np.vectorize(math.erf, otypes=[np.float64])  # stdlib erf: no torch for erf-GELU (GPT-NeoX) in the verifier


def convergence_radius(activation: str, a: np.ndarray, lo: int = 12, hi: int = 28) -> np.ndarray:
    """Per-anchor radius of convergence of the activation's Taylor series.

    SiLU: exactly sqrt(a² + π²) (the poles of σ at ±iπ). GELU: estimated by the root test on
    orders lo..hi; tanh-GELU has complex poles too, erf-GELU is entire and the estimate is
    then the practical radius within which its terms still shrink at the orders we use.
    """
    if activation == "silu":
        return np.sqrt(np.asarray(a, dtype=np.float64) ** 2 + math.pi**2)
    c = np.abs(activation_jet(activation, a, hi)[lo:])
    n = np.arange(lo, hi + 1).reshape((-1,) + (1,) * (c.ndim - 1))
    with np.errstate(divide="ignore"):
        est = np.where(c > 0, c ** (-1.0 / n), np.inf)
    return np.min(est, axis=0)
