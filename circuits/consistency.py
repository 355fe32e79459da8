"""Every Taylor order a release stores must describe the down column the proof read.

The circuit reads only the orders `circuits.spec.DEFAULT_ORDERS` (1 and 2) of the last blocks
and rebuilds each expanded neuron's down column from them,
    W_d[:, j] = Σ_{n ∈ orders} w_{n,j} Θ_n[:, j],   w = taylor.jets.lsq_weights(activation, point, orders),
while the runtime evaluates Θ_0 and every order up to N, and drops the orders above the guard
order where |δ| > guard_radius. A release whose other orders (or guard radii) came from another
model would therefore pass a proof made on orders 1–2. This module closes that gap: it checks

  * coeffs: every stored order n = 0..N satisfies Θ_n[:, j] = c_n(p_j) · W_d[:, j] per neuron,
    c_n(p) = act^{(n)}(p)/n! (taylor.jets.activation_jet), p_j the point the derivatives are
    taken at: the anchor z0 for a bias-free MLP (Llama), z0 + b for an MLP whose first-layer
    bias b is folded (GPT-2, GPT-NeoX). b is not released: the array-level checks take it from
    the caller, `check_taylor_consistency` recovers it from the orders as the prover and the
    circuit's public weights do (circuits.inputs.expansion_points; a point known only to within
    POINT_FIT_ERROR = 1e-7, allowed below like the anchor's rounding);
  * guard_radius: it is GUARD_SCALE × taylor.jets.convergence_radius(activation, p), which is
    what taylor.conversion writes.

Tolerance. conversion computes c_n(p) and Θ_n = c_n(p)·W_down[:, S] in fp64 and stores Θ_n and
the anchor in fp32. For an honest column, with p' the point conversion used and p the one
recomputed from the fp32 anchor, Θ_n − c_n(p)·W_d = [c_n(p') − c_n(p)·k]·W_down[:, j] (k =
Σ_m c_m(p)c_m(p')/Σ_m c_m(p)², m over the proven orders) plus fp32 rounding, so the residual has
  (i)  the rounding of Θ_n and of the proven orders that rebuild W_d: a few u = 2^-24 relative
       to |c_n|·‖W_d‖ — this is what RTOL bounds, with room to spare;
  (ii) the rounding of the anchor, |p − p'| ≤ u·|z0|: to first order
       |dc_n − c_n·Σ_m c_m dc_m / Σ_m c_m²|·u·|z0|·‖W_d‖ (dc_n = (n+1)c_{n+1}), not
       proportional to c_n, which matters only where c_n nearly vanishes;
  (iii) the fp64 error of the jets, taken as 2^-40·max_n|c_n|·‖W_d‖, and fp32 underflow where
       c_n·W_down is below 1e-38: up to half a subnormal per entry, sqrt(d)·2^-150 per column,
       in Θ_n and through W_d (×(1 + |c_n|·Σ_m|w_m|)).
(ii) and (iii) together form slack_n, allowed in full (×4, so an honest neuron that needs it uses
at most ~RTOL/4). A neuron passes order n iff ‖Θ_n − c_n·W_d‖ ≤ RTOL·|c_n|·‖W_d‖ + slack_n; the
number reported (and returned as the worst) is ‖Θ_n − c_n·W_d‖ / (|c_n|·‖W_d‖ + slack_n/RTOL),
compared with RTOL: the plain relative residual wherever c_n does not nearly vanish.
Measured on honest releases (N = 12, every block; details in tests/test_release_consistency.py):
Llama/SiLU ≤ 2.1e-7 (≈ 3.4 u) away from vanishing c_n and 4.9e-6 overall; GPT-2 (bias folded)
tanh-GELU ≤ 2.8e-7, erf-GELU ≤ 4.1e-7; with the bias recovered from the orders (tiny GPT-2 and
GPT-NeoX, 5 steps, last two blocks) ≤ 5.7e-6, at neurons whose c_0 nearly vanishes. A column from another model gives 0.5..100, so RTOL =
1e-4 sits over two orders of magnitude above honest noise and over three below a swapped column.
Guard radius: conversion stores fp32(GUARD_SCALE·R(p')); recomputed from p the relative
difference is a few u plus the slope of R across the anchor's rounding interval (SiLU: R =
sqrt(p² + π²), exact; GELU: a root-test estimate), GUARD_RTOL = 1e-5 (measured honest ≤ 6.1e-8 on
the tiny releases; ≤ 8e-6 for tanh-GELU next to the region below). Where taylor.jets' fp64 jets
are noise (tanh-GELU, p ≲ −3.5) the reference radius is itself noise: those neurons are reported
as undetermined, skipped by the array-level check and refused by `check_taylor_consistency`
(never the case for SiLU; a GPT-2 release with such an anchor is refused by `zkfp verify --release`).

numpy only (no torch, no transformers): the verifier imports this module.
Memory: one order at a time plus W_d (fp64) and row-block temporaries, so a 7B block
(13 orders × 4096 × 11008) needs about 0.6 GB, not the 2.3 GB of its coeffs tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from circuits.inputs import POINT_FIT_ERROR, expansion_points
from circuits.spec import DEFAULT_ORDERS
from taylor.jets import GUARD_ORDER, GUARD_SCALE
from zkfp.errors import ReleaseError

RTOL = 1e-4          # relative residual allowed per order and neuron (see the module docstring)
GUARD_RTOL = 1e-5    # relative difference allowed between a stored and a recomputed guard radius
_U32 = 2.0 ** -24    # unit roundoff of float32
_TINY32 = 2.0 ** -149  # smallest float32 subnormal
_SLACK = 4.0         # safety factor on the first-order anchor-rounding term
_FP64_NOISE = 2.0 ** -40  # relative to max_n |c_n|: fp64 error of the jets (and of nothing a runtime could see)
_GUARD_NOISE = GUARD_RTOL / 4  # curvature of R on the anchor's rounding interval that means "noise"
_ROW_BLOCK = 512     # rows of W_d processed at once (bounds the fp64 temporaries)

OrderSource = Callable[[int], np.ndarray]


def _as_order_source(coeffs) -> tuple[OrderSource, int]:
    """(n → Θ_n as float32 (d, S), number of orders) from an array or from a callable + count."""
    if isinstance(coeffs, tuple) and len(coeffs) == 2 and callable(coeffs[0]):
        return coeffs[0], int(coeffs[1])
    arr = coeffs
    if getattr(arr, "ndim", None) != 3:
        raise ReleaseError(f"Taylor coefficients must have shape (N+1, d, S), got {getattr(arr, 'shape', None)}")
    return (lambda n: np.asarray(arr[n], dtype=np.float32)), int(arr.shape[0])


def _point(anchor: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    p = np.asarray(anchor, dtype=np.float64)
    if bias is not None:
        b = np.asarray(bias, dtype=np.float64)
        if b.shape != p.shape:
            raise ReleaseError(f"first-layer bias has shape {b.shape}, the anchors {p.shape}")
        p = p + b
    return p


def _column_residual(theta: np.ndarray, c: np.ndarray, w_d: np.ndarray) -> np.ndarray:
    """‖Θ[:, j] − c_j·W_d[:, j]‖ per column j, in fp64, a block of rows at a time."""
    sq = np.zeros(theta.shape[1])
    for r in range(0, theta.shape[0], _ROW_BLOCK):
        diff = theta[r:r + _ROW_BLOCK].astype(np.float64)
        diff -= w_d[r:r + _ROW_BLOCK] * c
        sq += np.einsum("ij,ij->j", diff, diff)
    return np.sqrt(sq)


class OrderResidual(NamedTuple):
    """One stored order's fit, per expanded neuron j (all (S,) fp64, absolute)."""

    order: int
    residual: np.ndarray  # ‖Θ_n[:, j] − c_n(p_j)·W_d[:, j]‖
    scale: np.ndarray     # |c_n(p_j)|·‖W_d[:, j]‖: what RTOL is relative to
    slack: np.ndarray     # what the fp32 rounding of the anchor, the fp64 jets and fp32 underflow
                          # alone can produce (module docstring): allowed in full

    def relative(self, rtol: float) -> np.ndarray:
        """residual / (scale + slack/rtol), compared with rtol: ≈ the relative residual
        ‖Θ_n − c_n·W_d‖ / (|c_n|·‖W_d‖) wherever c_n does not nearly vanish; NaN for non-finite input."""
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = self.residual / (self.scale + self.slack / rtol)
        rel[np.isnan(self.residual) | np.isnan(self.scale) | np.isnan(self.slack)] = np.nan
        return rel


def coefficient_residuals(activation: str, anchor: np.ndarray, coeffs, *, bias: np.ndarray | None = None,
                          orders: Sequence[int] = DEFAULT_ORDERS, name: str = "coeffs",
                          point_error: float = 0.0) -> Iterator[OrderResidual]:
    """Yield an OrderResidual for every stored order: the proven orders first, then 0..N.

    `coeffs` is an array (N+1, d, S) or a pair (n → Θ_n, N+1) so that a caller can stream the
    orders from disk. `bias` (S,) is the folded first-layer bias of the expanded neurons, if any;
    `point_error` how far anchor + bias may lie from conversion's point beyond the anchor's
    rounding (a bias recovered from the orders: circuits.inputs.POINT_FIT_ERROR).
    """
    orders = [int(n) for n in orders]
    get, n_orders = _as_order_source(coeffs)
    anchor32 = np.asarray(anchor, dtype=np.float32)
    if anchor32.ndim != 1:
        raise ReleaseError(f"{name}: anchors must be a vector, got shape {anchor32.shape}")
    if not orders or min(orders) < 0 or max(orders) >= n_orders or len(set(orders)) != len(orders):
        raise ReleaseError(f"{name} holds orders 0..{n_orders - 1}, the proof reads orders {orders}")
    if not np.isfinite(anchor32).all():
        raise ReleaseError(f"{name}: the anchors hold non-finite values")
    from taylor.jets import activation_jet, lsq_weights

    p = _point(anchor32, bias)
    c = activation_jet(activation, p, n_orders)                       # (N+2, S): c_{N+1} for dc_N/dp
    dc = c[1:] * np.arange(1, n_orders + 1).reshape(-1, 1)            # dc_n/dp = (n+1) c_{n+1}, n = 0..N
    cp = c[orders]
    w = lsq_weights(activation, p, orders)                            # (len(orders), S), as the circuit's
    # First-order change of Θ_n − c_n(p)·W_d when p is off by dp (the rebuilt W_d rescales by
    # Σ_m c_m(p)c_m(p+dp)/Σ_m c_m(p)²): |dc_n − c_n·Σ_m c_m dc_m / Σ_m c_m²|·dp.
    kappa = (cp * dc[orders]).sum(axis=0) / np.maximum((cp * cp).sum(axis=0), 1e-300)
    dp = _U32 * np.abs(anchor32.astype(np.float64)) + point_error     # fp32 rounding of the released anchor
    noise = _FP64_NOISE * np.abs(c[:n_orders]).max(axis=0)            # fp64 error of the jets themselves
    wsum = np.abs(w).sum(axis=0)
    w_d = None
    for k, n in enumerate(orders):                                    # W_d, one proven order at a time
        theta = get(n)
        if theta.ndim != 2 or theta.shape[1] != anchor32.size:
            raise ReleaseError(f"{name} order {n} has shape {theta.shape}, expected (d, {anchor32.size})")
        if w_d is None:
            w_d = np.zeros(theta.shape)
        elif theta.shape != w_d.shape:
            raise ReleaseError(f"{name} order {n} has shape {theta.shape}, expected {w_d.shape}")
        for r in range(0, theta.shape[0], _ROW_BLOCK):
            w_d[r:r + _ROW_BLOCK] += theta[r:r + _ROW_BLOCK].astype(np.float64) * w[k]
        del theta
    norm = np.sqrt(np.einsum("ij,ij->j", w_d, w_d))
    # fp32 underflow: a stored entry is off by up to half the smallest subnormal (columns whose
    # c_n·W_down falls below 1e-38, e.g. erf-GELU anchors ≲ −13), in Θ_n and through W_d.
    underflow = _SLACK * np.sqrt(w_d.shape[0]) * _TINY32
    for n in orders + [n for n in range(n_orders) if n not in orders]:
        theta = get(n)                                                # the proven ones are read again
        if theta.shape != w_d.shape:
            raise ReleaseError(f"{name} order {n} has shape {theta.shape}, expected {w_d.shape}")
        res = _column_residual(theta, c[n], w_d)
        del theta
        with np.errstate(invalid="ignore"):
            scale = np.abs(c[n]) * norm
            slack = (_SLACK * np.abs(dc[n] - c[n] * kappa) * dp + noise) * norm \
                + underflow * (1.0 + np.abs(c[n]) * wsum)
        yield OrderResidual(n, res, scale, slack)


def check_coefficients(activation: str, anchor: np.ndarray, coeffs, *, bias: np.ndarray | None = None,
                       orders: Sequence[int] = DEFAULT_ORDERS, rtol: float = RTOL, name: str = "coeffs",
                       neurons: Sequence[int] | None = None, point_error: float = 0.0) -> float:
    """Raise ReleaseError unless every stored order is c_n(p)·W_d, W_d rebuilt from `orders`.

    Array-level form of `check_taylor_consistency` (any MLP family): `anchor` (S,) the released
    z0, `coeffs` (N+1, d, S) or (n → Θ_n, N+1), `bias` the folded first-layer bias of the expanded
    neurons (GPT-2-style MLPs; None when there is none), `neurons` the original indices of the S
    expanded neurons (for the message). Returns the worst relative residual (for measurements).
    """
    orders = tuple(int(n) for n in orders)
    worst = 0.0
    for fit in coefficient_residuals(activation, anchor, coeffs, bias=bias, orders=orders, name=name,
                                     point_error=point_error):
        rel = fit.relative(rtol)
        bad = ~(rel <= rtol)
        n = fit.order
        if bad.any():
            j = int(np.argmax(np.where(bad, np.nan_to_num(rel, nan=np.inf), -1.0)))
            who = f"neuron {int(neurons[j])} (column {j})" if neurons is not None else f"neuron {j}"
            what = (f"the proven orders {orders} do not describe one down column" if n in orders
                    else "not the column the proof read")
            value = "non-finite" if np.isnan(rel[j]) else f"{rel[j]:.3g}"
            raise ReleaseError(f"{name} order {n}, {who}: {what} (relative residual {value}; "
                               f"{int(bad.sum())} of {rel.size} neurons exceed {rtol:g})")
        worst = max(worst, float(rel.max(initial=0.0)))
    return worst


class GuardResidual(NamedTuple):
    """The stored guard radii against GUARD_SCALE·convergence_radius(p), per neuron (S,), fp64."""

    difference: np.ndarray    # |stored − recomputed| / recomputed (0 where equal, incl. both inf)
    slack: np.ndarray         # |R(p + dp) − R(p − dp)| / R(p): what the anchor's fp32 rounding allows
    undetermined: np.ndarray  # bool: R is numerical noise on [p − dp, p + dp] (taylor.jets loses precision)

    def relative(self, rtol: float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = self.difference / (1.0 + self.slack / rtol)
        rel[np.isnan(self.difference)] = np.nan
        return rel


def guard_residuals(activation: str, anchor: np.ndarray, guard_radius: np.ndarray, *,
                    bias: np.ndarray | None = None, point_error: float = 0.0) -> GuardResidual:
    """Compare the stored guard radii with GUARD_SCALE × taylor.jets.convergence_radius at p.

    conversion evaluated R at its fp64 point p', which the release pins only to within the fp32
    rounding of the anchor, |p − p'| ≤ dp = u·|z0|; R is sampled at p + k·dp, k ∈ {−1, −½, 0, ½, 1}:
    the spread gives the slack, and a departure from a straight line on that tiny interval marks R
    as numerical noise there (tanh-GELU's root-test estimate for p ≲ −3.5: its high-order jets are
    fp64 rounding noise), where no stored value can be confirmed or refuted.
    """
    from taylor.jets import convergence_radius

    g = np.asarray(guard_radius, dtype=np.float64)
    anchor32 = np.asarray(anchor, dtype=np.float32)
    if g.shape != anchor32.shape or g.ndim != 1:
        raise ReleaseError(f"guard_radius has shape {g.shape}, the anchors {anchor32.shape}")
    p = _point(anchor32, bias)
    dp = _U32 * np.abs(anchor32.astype(np.float64)) + point_error
    ks = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    r = np.stack([GUARD_SCALE * convergence_radius(activation, p + k * dp) for k in ks])
    ref = r[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        line = r[0] + (r[-1] - r[0]) * ((ks[:, None] + 1.0) / 2.0)
        noise = np.abs(r - line).max(axis=0) / ref
        slack = np.abs(r[-1] - r[0]) / ref
        diff = np.abs(g - ref) / ref
    diff = np.where(g == ref, 0.0, diff)                              # equal infinities
    diff[np.isnan(g) | np.isnan(ref)] = np.nan
    slack = np.where(np.isfinite(slack), slack, 0.0)
    undetermined = np.isfinite(ref) & (noise > _GUARD_NOISE)
    return GuardResidual(diff, slack, undetermined)


def check_guard_radius(activation: str, anchor: np.ndarray, guard_radius: np.ndarray, *,
                       bias: np.ndarray | None = None, rtol: float = GUARD_RTOL, name: str = "guard_radius",
                       neurons: Sequence[int] | None = None, strict: bool = False,
                       point_error: float = 0.0) -> float:
    """Raise ReleaseError unless guard_radius = GUARD_SCALE × the series' radius at p (as conversion
    writes it), to within rtol plus the anchor-rounding slack. Neurons where the reference is
    numerical noise (GuardResidual.undetermined) are skipped, or refused if `strict`.
    Returns the worst relative difference over the checked neurons."""
    fit = guard_residuals(activation, anchor, guard_radius, bias=bias, point_error=point_error)
    rel = fit.relative(rtol)

    def who(j: int) -> str:
        return f"neuron {int(neurons[j])} (column {j})" if neurons is not None else f"neuron {j}"

    bad = ~(rel <= rtol) & ~fit.undetermined
    if bad.any():
        j = int(np.argmax(np.where(bad, np.nan_to_num(rel, nan=np.inf), -1.0)))
        value = "non-finite" if np.isnan(rel[j]) else f"{rel[j]:.3g}"
        raise ReleaseError(f"{name}, {who(j)}: not {GUARD_SCALE} × the series' radius of convergence at the "
                           f"anchor (relative difference {value}; {int(bad.sum())} of {rel.size} neurons "
                           f"exceed {rtol:g})")
    if strict and fit.undetermined.any():
        j = int(np.argmax(fit.undetermined))
        raise ReleaseError(f"{name}, {who(j)}: the radius of convergence at this anchor is fp64 noise "
                           f"(taylor.jets), so the stored guard radius cannot be checked "
                           f"({int(fit.undetermined.sum())} of {rel.size} neurons)")
    return float(np.where(fit.undetermined, 0.0, rel).max(initial=0.0))


def _streamed_coeffs(rel, key: str) -> tuple[OrderSource, int]:
    """Read `key` one order at a time straight from its safetensors file (circuits.inputs checks
    its header, dtype, offsets, manifest shape and truncation)."""
    stored = rel.locate(key)
    if len(stored.shape) != 3:
        raise ReleaseError(f"tensor {key} has shape {stored.shape}, expected (orders, hidden, neurons)")
    per_order = stored.shape[1] * stored.shape[2]

    def get(n: int) -> np.ndarray:
        return stored.read(n * per_order, per_order).reshape(stored.shape[1], stored.shape[2])

    return get, stored.shape[0]


def check_taylor_consistency(rel, layers: Sequence[int], orders: Sequence[int] = DEFAULT_ORDERS,
                             rtol: float = RTOL, guard_rtol: float = GUARD_RTOL) -> dict[int, dict[str, float]]:
    """Check that blocks `layers` of the release (circuits.inputs.Release) store, in every order
    0..N, the down columns the proof rebuilds from `orders`, and the guard radii conversion
    computes from the anchors; raise ReleaseError naming the tensor, order and neuron otherwise.

    Returns {layer: {"coeffs": worst relative residual, "guard_radius": worst relative difference}}.
    """
    guard = rel.manifest.get("guard") if isinstance(rel.manifest, dict) else None
    if not isinstance(guard, dict) or guard.get("order") != GUARD_ORDER or guard.get("radius_scale") != GUARD_SCALE:
        raise ReleaseError(f"release guard {guard!r} is not order {GUARD_ORDER}, radius scale {GUARD_SCALE}")
    report: dict[int, dict[str, float]] = {}
    for i in layers:
        i = int(i)
        if not 0 <= i < len(rel.layers_info):
            raise ReleaseError(f"release has no block {i}")
        prefix = f"taylor.layers.{i}."
        neurons = list(rel.layers_info[i].get("expanded", []))
        anchor = rel.mlp(i, "anchor")
        if len(neurons) != anchor.size:
            raise ReleaseError(f"{prefix}anchor holds {anchor.size} anchors, the manifest lists "
                               f"{len(neurons)} expanded neurons")
        get, n_orders = _streamed_coeffs(rel, prefix + "coeffs")
        if n_orders != rel.n_terms + 1:
            raise ReleaseError(f"{prefix}coeffs holds {n_orders} orders, the manifest says N = {rel.n_terms}")
        # a folded first-layer bias: the points the circuit's weights were computed at, less the anchors
        folded = bool(rel.layout.get("in_bias"))
        bias = expansion_points(rel, i) - anchor if folded else None
        fit = POINT_FIT_ERROR if folded else 0.0
        worst_c = check_coefficients(rel.activation, anchor, (get, n_orders), bias=bias, orders=orders, rtol=rtol,
                                     name=prefix + "coeffs", neurons=neurons, point_error=fit)
        worst_g = check_guard_radius(rel.activation, anchor, rel.mlp(i, "guard_radius"), bias=bias, rtol=guard_rtol,
                                     name=prefix + "guard_radius", neurons=neurons, strict=True, point_error=fit)
        report[i] = {"coeffs": worst_c, "guard_radius": worst_g}
    return report


__all__ = ["GUARD_ORDER", "GUARD_SCALE", "GUARD_RTOL", "RTOL", "check_coefficients", "check_guard_radius",
           "check_taylor_consistency", "coefficient_residuals", "guard_residuals", "GuardResidual",
           "OrderResidual"]
