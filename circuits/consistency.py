"""Every Taylor order a release stores must describe the down column the proof read.

The circuit reads only the orders `circuits.spec.DEFAULT_ORDERS` (1 and 2) of the last blocks
and rebuilds each expanded neuron's down column from them,
    W_d[:, j] = Σ_{n ∈ orders} w_{n,j} Θ_n[:, j],   w = taylor.jets.lsq_weights(activation, point, orders),
while the runtime evaluates Θ_0 and every order up to N, and drops the orders above the guard
order where |δ| > guard_radius. A release whose other orders (or guard radii) came from another
model would therefore pass a proof made on orders 1–2. This module closes that gap: it checks

  * coeffs: every stored order n = 0..N satisfies Θ_n[:, j] = c_n(p_j) · W_d[:, j] per neuron,
    c_n(p) = act^{(n)}(p)/n! (taylor.jets.activation_jet), p_j the point the derivatives are
    taken at: the anchor z0 for a bias-free MLP (the only kind the circuit covers), z0 + b for
    an MLP whose first-layer bias b is folded (GPT-2; b is not released, the caller supplies it);
  * guard_radius: it is GUARD_SCALE × taylor.jets.convergence_radius(activation, p), which is
    what taylor.conversion writes.

Tolerance. conversion computes c_n(p) and Θ_n = c_n(p)·W_down[:, S] in fp64 and stores Θ_n and
the anchor in fp32. For an honest column, with p' the point conversion used and p the one
recomputed from the fp32 anchor, Θ_n − c_n(p)·W_d = [c_n(p') − c_n(p)·k]·W_down[:, j] (k =
Σ_m c_m(p)c_m(p')/Σ_m c_m(p)², m over the proven orders) plus fp32 rounding, so the residual has
  (i)  the rounding of Θ_n and of the proven orders that rebuild W_d: a few u = 2^-24 relative
       to |c_n|·‖W_d‖ — this is what RTOL bounds, with room to spare;
  (ii) the rounding of the anchor, |p − p'| ≤ u·|z0|: to first order
       slack_n = |dc_n − c_n·Σ_m c_m dc_m / Σ_m c_m²|·u·|z0| (dc_n = (n+1)c_{n+1}), not
       proportional to c_n, which matters only where c_n nearly vanishes; it is allowed in full
       (×4, so an honest neuron there uses at most ~RTOL/4), plus 2^-40·max_n|c_n| for the fp64
       error of the jets.
A neuron passes order n iff ‖Θ_n − c_n·W_d‖ ≤ (RTOL·|c_n| + slack_n)·‖W_d‖; the number reported
(and returned as the worst) is ‖Θ_n − c_n·W_d‖ / ((|c_n| + slack_n/RTOL)·‖W_d‖), compared with
RTOL, which is the plain relative residual wherever c_n does not nearly vanish. Measured worst
honest values are in tests/test_release_consistency.py (MEASURED); a column taken from another
model gives residuals of order 1, so RTOL = 1e-4 sits orders of magnitude from both.
Guard radius: conversion stores fp32(GUARD_SCALE·R(p')); recomputed from p the relative
difference is a few u (SiLU: R = sqrt(p² + π²); GELU: a root-test estimate), GUARD_RTOL = 1e-5.

numpy only (no torch, no transformers): the verifier imports this module. (taylor.jets imports
torch lazily for erf only, i.e. only for erf-GELU releases, which the circuit does not cover.)
Memory: one order at a time plus W_d (fp64) and row-block temporaries, so a 7B block
(13 orders × 4096 × 11008) needs about 0.6 GB, not the 2.3 GB of its coeffs tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from circuits.spec import DEFAULT_ORDERS
from zkfp.errors import ReleaseError

# Mirrors of taylor.conversion.GUARD_ORDER / GUARD_SCALE (that module imports torch).
GUARD_ORDER = 2
GUARD_SCALE = 0.75
RTOL = 1e-4          # relative residual allowed per order and neuron (see the module docstring)
GUARD_RTOL = 1e-5    # relative difference allowed between a stored and a recomputed guard radius
_U32 = 2.0 ** -24    # unit roundoff of float32
_SLACK = 4.0         # safety factor on the first-order anchor-rounding term
_FP64_NOISE = 2.0 ** -40  # relative to max_n |c_n|: fp64 error of the jets (and of nothing a runtime could see)
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
    """One stored order's fit, per expanded neuron j (all (S,) fp64, relative to ‖W_d[:, j]‖)."""

    order: int
    residual: np.ndarray     # ‖Θ_n[:, j] − c_n(p_j)·W_d[:, j]‖ / ‖W_d[:, j]‖ (0/0 → 0, x/0 → inf)
    coefficient: np.ndarray  # |c_n(p_j)|
    slack: np.ndarray        # what the fp32 rounding of the anchor alone can produce (module docstring)

    def relative(self, rtol: float) -> np.ndarray:
        """residual / (|c_n| + slack/rtol): the number compared with rtol (≈ residual/|c_n|
        wherever c_n does not nearly vanish); NaN for non-finite input."""
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = self.coefficient + self.slack / rtol
            rel = np.where(scale > 0, self.residual / scale, np.where(self.residual == 0, 0.0, np.inf))
        rel[np.isnan(self.residual) | np.isnan(scale)] = np.nan
        return rel


def coefficient_residuals(activation: str, anchor: np.ndarray, coeffs, *, bias: np.ndarray | None = None,
                          orders: Sequence[int] = DEFAULT_ORDERS, name: str = "coeffs") -> Iterator[OrderResidual]:
    """Yield an OrderResidual for every stored order: the proven orders first, then 0..N.

    `coeffs` is an array (N+1, d, S) or a pair (n → Θ_n, N+1) so that a caller can stream the
    orders from disk. `bias` (S,) is the folded first-layer bias of the expanded neurons, if any.
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
    dp = _U32 * np.abs(anchor32.astype(np.float64))                   # fp32 rounding of the released anchor
    noise = _FP64_NOISE * np.abs(c[:n_orders]).max(axis=0)            # fp64 error of the jets themselves
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
    for n in orders + [n for n in range(n_orders) if n not in orders]:
        theta = get(n)                                                # the proven ones are read again
        if theta.shape != w_d.shape:
            raise ReleaseError(f"{name} order {n} has shape {theta.shape}, expected {w_d.shape}")
        res = _column_residual(theta, c[n], w_d)
        del theta
        with np.errstate(divide="ignore", invalid="ignore"):
            residual = np.where(norm > 0, res / norm, np.where(res == 0, 0.0, np.inf))
        residual[np.isnan(res) | np.isnan(norm)] = np.nan
        slack = _SLACK * np.abs(dc[n] - c[n] * kappa) * dp + noise
        yield OrderResidual(n, residual, np.abs(c[n]), slack)


def check_coefficients(activation: str, anchor: np.ndarray, coeffs, *, bias: np.ndarray | None = None,
                       orders: Sequence[int] = DEFAULT_ORDERS, rtol: float = RTOL, name: str = "coeffs",
                       neurons: Sequence[int] | None = None) -> float:
    """Raise ReleaseError unless every stored order is c_n(p)·W_d, W_d rebuilt from `orders`.

    Array-level form of `check_taylor_consistency` (any MLP family): `anchor` (S,) the released
    z0, `coeffs` (N+1, d, S) or (n → Θ_n, N+1), `bias` the folded first-layer bias of the expanded
    neurons (GPT-2-style MLPs; None when there is none), `neurons` the original indices of the S
    expanded neurons (for the message). Returns the worst relative residual (for measurements).
    """
    orders = tuple(int(n) for n in orders)
    worst = 0.0
    for fit in coefficient_residuals(activation, anchor, coeffs, bias=bias, orders=orders, name=name):
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


def guard_residuals(activation: str, anchor: np.ndarray, guard_radius: np.ndarray, *,
                    bias: np.ndarray | None = None) -> np.ndarray:
    """|stored − GUARD_SCALE·convergence_radius(p)| / |recomputed| per neuron (0 where both are inf)."""
    from taylor.jets import convergence_radius

    g = np.asarray(guard_radius, dtype=np.float64)
    anchor32 = np.asarray(anchor, dtype=np.float32)
    if g.shape != anchor32.shape:
        raise ReleaseError(f"guard_radius has shape {g.shape}, the anchors {anchor32.shape}")
    ref = GUARD_SCALE * convergence_radius(activation, _point(anchor32, bias))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(g - ref) / np.abs(ref)
    rel = np.where(g == ref, 0.0, rel)                                # equal infinities
    return np.where(np.isnan(g) | np.isnan(ref), np.nan, rel)


def check_guard_radius(activation: str, anchor: np.ndarray, guard_radius: np.ndarray, *,
                       bias: np.ndarray | None = None, rtol: float = GUARD_RTOL, name: str = "guard_radius",
                       neurons: Sequence[int] | None = None) -> float:
    """Raise ReleaseError unless guard_radius = GUARD_SCALE × the series' radius at p (as conversion
    writes it). Returns the worst relative difference."""
    rel = guard_residuals(activation, anchor, guard_radius, bias=bias)
    bad = ~(rel <= rtol)
    if bad.any():
        j = int(np.argmax(np.where(bad, np.nan_to_num(rel, nan=np.inf), -1.0)))
        who = f"neuron {int(neurons[j])} (column {j})" if neurons is not None else f"neuron {j}"
        value = "non-finite" if np.isnan(rel[j]) else f"{rel[j]:.3g}"
        raise ReleaseError(f"{name}, {who}: not {GUARD_SCALE} × the series' radius of convergence at the "
                           f"anchor (relative difference {value}; {int(bad.sum())} of {rel.size} neurons "
                           f"exceed {rtol:g})")
    return float(rel.max(initial=0.0))


def _streamed_coeffs(rel, key: str) -> tuple[OrderSource, int]:
    """Read `key` one order at a time (safetensors slices), with the checks of Release.get."""
    from safetensors import safe_open

    info = rel.tensors.get(key)
    if info is None:
        raise ReleaseError(f"tensor {key!r} is not in the release")
    fname = info["file"]
    if "/" in fname or "\\" in fname or fname.startswith("."):
        raise ReleaseError(f"release lists a file name that is not a plain name: {fname!r}")
    try:
        handle = safe_open(rel.path / fname, framework="np")
        sl = handle.get_slice(key)
        shape = tuple(sl.get_shape())
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise ReleaseError(f"cannot read tensor {key} from {fname}: {exc}") from None
    if shape != tuple(info["shape"]) or len(shape) != 3:
        raise ReleaseError(f"tensor {key} has shape {shape}, manifest says {info['shape']}")

    def get(n: int) -> np.ndarray:
        _ = handle  # keep the file open as long as the reader lives
        try:
            return np.asarray(sl[n], dtype=np.float32)
        except Exception as exc:  # noqa: BLE001
            raise ReleaseError(f"cannot read order {n} of tensor {key} from {fname}: {exc}") from None

    return get, shape[0]


def check_taylor_consistency(rel, layers: Sequence[int], orders: Sequence[int] = DEFAULT_ORDERS,
                             rtol: float = RTOL, guard_rtol: float = GUARD_RTOL) -> dict[int, dict[str, float]]:
    """Check that blocks `layers` of the release (circuits.inputs.Release) store, in every order
    0..N, the down columns the proof rebuilds from `orders`, and the guard radii conversion
    computes from the anchors; raise ReleaseError naming the tensor, order and neuron otherwise.

    Returns {layer: {"coeffs": worst relative residual, "guard_radius": worst relative difference}}.
    """
    if rel.layout.get("in_bias"):
        raise ReleaseError("this release folds a first-layer bias into its anchors and does not release it: "
                           "its Taylor coefficients cannot be checked from the release alone")
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
        worst_c = check_coefficients(rel.activation, anchor, (get, n_orders), orders=orders, rtol=rtol,
                                     name=prefix + "coeffs", neurons=neurons)
        worst_g = check_guard_radius(rel.activation, anchor, rel.mlp(i, "guard_radius"), rtol=guard_rtol,
                                     name=prefix + "guard_radius", neurons=neurons)
        report[i] = {"coeffs": worst_c, "guard_radius": worst_g}
    return report


__all__ = ["GUARD_ORDER", "GUARD_SCALE", "GUARD_RTOL", "RTOL", "check_coefficients", "check_guard_radius",
           "check_taylor_consistency", "coefficient_residuals", "guard_residuals", "OrderResidual"]
