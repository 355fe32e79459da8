"""Running a release: a TaylorMLP module per block inside an ordinary transformers model.

The expanded neurons compute Σ_n Θ_n (δ^n ⊙ u) with δ = in_weight·x − anchor and u the exact
up-projection (1 for a plain MLP); the powers are accumulated one multiplication at a time in
fp32 (p ← p·δ; the 1/n! is already folded into Θ_n), one down-projection-sized product per
order, which is where the throttle comes from. The remaining neurons run exactly.

Guard: where |δ| exceeds guard_radius (a fraction of the series' radius of convergence at the
anchor, ≈ 0.75·sqrt(a²+π²) for SiLU), orders above `guard_order` are dropped for that element, so
outside the region where the series converges, adding terms cannot make the output diverge.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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
    |δ| beyond the guard radius and were evaluated only to the guard order."""

    evaluations: int = 0
    fell_back: int = 0

    @property
    def fraction(self) -> float:
        return self.fell_back / self.evaluations if self.evaluations else 0.0


class TaylorMLP(nn.Module):
    """One block's protected MLP, holding the release tensors as fp32 buffers."""

    counts: GuardCounts | None = None  # set by guard_counts(); None: nothing is counted

    def __init__(self, tensors: dict[str, torch.Tensor], activation: str, guard_order: int):
        super().__init__()
        self.activation = activation
        self.guard_order = int(guard_order)
        self.gated = "up_weight" in tensors
        for name, t in tensors.items():
            self.register_buffer(name, t.float().contiguous())
        self.n_terms = self.coeffs.shape[0] - 1
        if not self.gated:  # Θ_0 applied to u = 1 is a constant vector
            self.register_buffer("zeroth", self.coeffs[0].sum(dim=1))

    def theta(self, n: int) -> torch.Tensor:
        """Θ_n, the (d, |S|) matrix of order n."""
        return self.coeffs[n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        delta = F.linear(x, self.in_weight) - self.anchor
        outside = delta.abs() > self.guard_radius
        if self.counts is not None and self.n_terms > self.guard_order:
            self.counts.evaluations += outside.numel()
            self.counts.fell_back += int(outside.sum())
        if self.gated:
            p = F.linear(x, self.up_weight)
            y = F.linear(p, self.theta(0))
        else:
            p = None
            y = self.zeroth.expand(*x.shape[:-1], -1)
        for n in range(1, self.n_terms + 1):
            p = delta if p is None else p * delta
            if n == self.guard_order + 1:
                p = p.masked_fill(outside, 0.0)
            y = y + F.linear(p, self.theta(n))
        h = F.linear(x, self.exact_in_weight, getattr(self, "exact_in_bias", None))
        h = _ACT[self.activation](h)
        if self.gated:
            h = h * F.linear(x, self.exact_up_weight)
        y = y + F.linear(h, self.exact_down_weight, getattr(self, "down_bias", None))
        return y.to(dtype)


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
        mlp = TaylorMLP(reader.mlp(i), reader.activation, reader.guard_order)
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
