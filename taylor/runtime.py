"""Running a release: a TaylorMLP module per block inside an ordinary transformers model.

The expanded neurons compute Σ_n Θ_n (δ^n ⊙ u) with δ = in_weight·x − anchor and u the exact
up-projection (1 for a plain MLP); the powers are accumulated one multiplication at a time in
fp32 (p ← p·δ; the 1/n! is already folded into Θ_n), one down-projection-sized product per
order, which is where the throttle comes from. The remaining neurons run exactly.

Guard: where |δ| exceeds guard_radius (a fraction of the series' radius of convergence at the
anchor, ≈ 0.75·sqrt(a²+π²) for SiLU), the series is not used for that element: orders above
`guard_order` are dropped and the remainder act(t+δ) − Σ_{n≤guard_order} c_n δⁿ is added through
one of the low orders' products. Θ_n[:, j] = W_down[:, j]·c_n(t_j), so feeding r/c_m(t_j) into
order m's product adds W_down[:, j]·r: the element is evaluated exactly, at no extra product.
(Before this, the guard kept only orders ≤ 2 there, a wrong value: on a hidden-1024 Llama whose
fallbacks were 0.1 % of evaluations, 48 % of greedy sequences stayed identical; with it, 100 %.)
t_j is the anchor, or for a plain MLP with a first-layer bias (not released), the anchor plus
that bias as recovered from the orders (taylor.effective.solve_anchors).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taylor import jets
from taylor.effective import expansion_points
from taylor.release import ReleaseReader

_ALIASES = {"embed_out.weight": "lm_head.weight"}  # GPT-NeoX's head, renamed by transformers ≥ 5
_ACT = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass
class GuardCounts:
    """One block's guard tally: (token, expanded neuron) evaluations, and how many of them had
    |δ| beyond the guard radius, where the series is not used and the activation is evaluated exactly."""

    evaluations: int = 0
    fell_back: int = 0

    @property
    def fraction(self) -> float:
        return self.fell_back / self.evaluations if self.evaluations else 0.0


class TaylorMLP(nn.Module):
    """One block's protected MLP, holding the release tensors as fp32 buffers."""

    counts: GuardCounts | None = None  # set by guard_counts(); None: nothing is counted

    def __init__(self, tensors: dict[str, torch.Tensor], activation: str, guard_order: int,
                 center: np.ndarray | None = None):
        """`center`: each expanded neuron's expansion point t (fp64; default: the anchor, right
        unless a first-layer bias was folded into it); it serves the exact evaluation beyond the
        guard radius."""
        super().__init__()
        self.activation = activation
        self.guard_order = int(guard_order)
        self.gated = "up_weight" in tensors
        for name, t in tensors.items():
            self.register_buffer(name, t.float().contiguous())
        self.n_terms = self.coeffs.shape[0] - 1
        if not self.gated:  # Θ_0 applied to u = 1 is a constant vector
            self.register_buffer("zeroth", self.coeffs[0].sum(dim=1))
        self._fallback_buffers(self.anchor.double().numpy() if center is None else np.asarray(center, np.float64))

    def _fallback_buffers(self, t: np.ndarray) -> None:
        """c_n(t) for n ≤ guard_order (the guarded series), and per neuron the order m whose
        product carries the remainder, as 1/c_m(t) in row m of `carrier` (zeros elsewhere): the
        m with the largest |c_m|, among orders ≥ 1 for a plain MLP (its order 0 is a constant)."""
        low = jets.activation_jet(self.activation, t, self.guard_order)  # (g+1, S)
        first = 0 if self.gated else 1
        m = first + np.argmax(np.abs(low[first:]), axis=0)
        carrier = np.zeros_like(low)
        cols = np.arange(t.size)
        carrier[m, cols] = 1.0 / low[m, cols]
        self.register_buffer("center", torch.from_numpy(t).float())
        self.register_buffer("low_orders", torch.from_numpy(low).float())
        self.register_buffer("carrier", torch.from_numpy(carrier).float())

    def theta(self, n: int) -> torch.Tensor:
        """Θ_n, the (d, |S|) matrix of order n."""
        return self.coeffs[n]

    def _remainder(self, delta: torch.Tensor, outside: torch.Tensor, u: torch.Tensor | None):
        """Per low order m, what to add to that order's product input so that elements beyond
        the guard radius come out exact; None when no element is beyond it."""
        if self.n_terms < self.guard_order or not bool(outside.any()):
            return None  # (fewer orders than the guard's only in studies of N: taylor.runtime.set_terms)
        series = torch.zeros_like(delta)
        for c in self.low_orders.flip(0):  # Horner, orders ≤ guard_order
            series = series * delta + c
        exact = _ACT[self.activation](delta + self.center)
        r = torch.where(outside, exact - series, torch.zeros_like(delta))
        if u is not None:
            r = r * u
        return [r * self.carrier[m] for m in range(self.low_orders.shape[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        delta = F.linear(x, self.in_weight) - self.anchor
        outside = delta.abs() > self.guard_radius
        if self.counts is not None and self.n_terms > self.guard_order:
            self.counts.evaluations += outside.numel()
            self.counts.fell_back += int(outside.sum())
        u = F.linear(x, self.up_weight) if self.gated else None
        remainder = self._remainder(delta, outside, u)
        if self.gated:
            p = u
            y = F.linear(p if remainder is None else p + remainder[0], self.theta(0))
        else:
            p = None
            y = self.zeroth.expand(*x.shape[:-1], -1)
        for n in range(1, self.n_terms + 1):
            p = delta if p is None else p * delta
            if n == self.guard_order + 1:
                p = p.masked_fill(outside, 0.0)
            carried = remainder is not None and n < len(remainder)
            y = y + F.linear(p + remainder[n] if carried else p, self.theta(n))
        h = F.linear(x, self.exact_in_weight, getattr(self, "exact_in_bias", None))
        h = _ACT[self.activation](h)
        if self.gated:
            h = h * F.linear(x, self.exact_up_weight)
        y = y + F.linear(h, self.exact_down_weight, getattr(self, "down_bias", None))
        return y.to(dtype)


# Orders used to recover a folded bias (solve_anchors' cost grows with their square; the first 8
# fix t to within 1e-6 on the tiny GPT-2 and GPT-NeoX releases, tests/test_taylor.py).
_CENTER_ORDERS = 8


def _centers(reader: ReleaseReader, tensors: dict[str, torch.Tensor]) -> np.ndarray:
    """Block's expansion points t, a folded first-layer bias recovered from its first orders."""
    return expansion_points(reader.activation, tensors["anchor"].double().numpy(),
                            tensors["coeffs"][:_CENTER_ORDERS].double().numpy(), reader.layout.in_bias)


def mlp_module_name(family, i: int) -> str:
    return family.base_prefixes[0] + family.layer.format(i=i) + "mlp"


def load_release(release_dir: str | os.PathLike, *, dtype: torch.dtype = torch.float32, verify: bool = True):
    """A transformers causal LM whose MLPs are TaylorMLP modules built from the release.

    The release is validated first (manifest, sha256 of every file, every tensor's shape).
    `.generate()` then runs the protected computation.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from zkfp.errors import ReleaseError

    reader = ReleaseReader(release_dir, verify=verify)
    path = Path(release_dir)
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    family = reader.arch.family
    expected = model.state_dict()
    state = {}
    for n in reader.names:
        if not n.startswith("taylor."):
            key = n if n in expected else _ALIASES.get(n, n)  # checkpoint names transformers renames on load
            if key in expected and tuple(expected[key].shape) != reader.shape(n):
                raise ReleaseError(f"tensor {n} has shape {reader.shape(n)}, the config implies "
                                   f"{tuple(expected[key].shape)}")
            state[key] = reader.get(n, dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ReleaseError(f"release tensor {unexpected[0]} does not belong to a {family.name} model")
    mlp_names = {mlp_module_name(family, i) + "." for i in range(reader.arch.dims.layers)}
    tied = set()
    if getattr(model.config, "tie_word_embeddings", False):
        tied = {n for n in missing if n.endswith("lm_head.weight")}
    missing = [n for n in missing if n not in tied and not any(n.startswith(p) for p in mlp_names)]
    if missing:
        raise ReleaseError(f"release lacks the tensor {missing[0]}")
    if tied:
        model.tie_weights()
    for i in range(reader.arch.dims.layers):
        tensors = reader.mlp(i)
        mlp = TaylorMLP(tensors, reader.activation, reader.guard_order, center=_centers(reader, tensors))
        model.set_submodule(mlp_module_name(family, i), mlp)
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    reader.close()  # the weights are copied into the model: unmap the release files
    return model


def set_terms(model, n_terms: int) -> None:
    """Evaluate only orders ≤ n_terms (≤ the release's N) in every TaylorMLP: for studies of N."""
    for module in model.modules():
        if isinstance(module, TaylorMLP):
            if not hasattr(module, "_all_terms"):
                module._all_terms = module.n_terms
            if not 1 <= n_terms <= module._all_terms:
                raise ValueError(f"n_terms must be within 1..{module._all_terms}")
            module.n_terms = n_terms


@contextmanager
def guard_counts(model):
    """Count guard fallbacks in every TaylorMLP of `model` while the block runs; yields one
    GuardCounts per block, in block order (filled in as the model runs)."""
    mlps = [m for m in model.modules() if isinstance(m, TaylorMLP)]
    counts = [GuardCounts() for _ in mlps]
    for m, c in zip(mlps, counts):
        m.counts = c
    try:
        yield counts
    finally:
        for m in mlps:
            m.counts = None


__all__ = ["GuardCounts", "TaylorMLP", "guard_counts", "load_release", "set_terms"]
