"""A release's throttle, measured on the checkpoint's own shape, and the (N, fraction) that reaches a target.

A release changes only the MLPs, so a generated token costs the source's time plus, in each of
the L blocks, the difference between a TaylorMLP and the source's MLP:

    slowdown(N, f) = 1 + L · (t_taylor(N, f) − t_mlp) / t_token

t_token (the source's time per token: batch 1, greedy decoding with a cache) comes from shells of
the checkpoint's config with one and two blocks, t_token = t_1 + (L − 1)·(t_2 − t_1), so the head
is counted once; t_mlp and t_taylor are one token through the source's MLP module and through a
taylor.runtime.TaylorMLP holding the release's tensor shapes for (N, f). Weights are random, as the
cost of a product does not depend on its values. Everything runs with `threads` torch threads
(default 1: one decoding stream on one core), so the figures hold for this machine and are
recorded in the manifest as measured, with the thread count.

Fidelity bounds the search (`choose`): N never goes below DEFAULT_TERMS (the smallest N with 100 %
greedy agreement on both MLP families, benchmarks/taylor_fidelity.py) nor above the format's
MAX_TERMS, and the expanded fraction never above its ceiling (DEFAULT_FRACTION, the largest
fraction whose fidelity was measured, unless the caller raises it). A small target is reached by
expanding fewer neurons at N = DEFAULT_TERMS; a large one by raising N at the ceiling fraction.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from zkfp.architectures import CAUSAL_FAMILIES, detect
from zkfp.errors import ZkfpError

from taylor.conversion import DEFAULT_TERMS as MIN_TERMS
from taylor.release import MAX_TERMS, MlpLayout
from taylor.runtime import TaylorMLP, mlp_module_name

_TOKENS = 8  # tokens decoded per timed generate call
_REPS = 5  # interleaved repetitions; the fastest is kept, as the one least disturbed by other work
# Distinct Θ_n matrices held while timing a TaylorMLP, at most this many bytes (at least two): on
# the Llama-2-7B shape one order is 126 MB, so N = 28 would otherwise hold 3.7 GB just to be timed.
_POOL_BYTES = 512 << 20


@dataclass(frozen=True)
class Throttle:
    """What `choose` settled on, and what it measured for it."""

    target: float
    n_terms: int
    fraction: float
    slowdown: float  # measured, for (n_terms, fraction)
    token_ms: float  # the source's time per token
    threads: int

    def to_json(self) -> dict:
        return {**asdict(self), "method": "taylor.throttle: 1 + L·(t_taylor − t_mlp)/t_token, measured on "
                                          "the checkpoint's shape with random weights, batch 1"}


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ShapeTimer:
    """Times the pieces of one token of a checkpoint's config (see the module docstring)."""

    def __init__(self, config: dict):
        self.config = dict(config)
        self.arch = detect(self.config, CAUSAL_FAMILIES)
        self.layout: MlpLayout | None = None  # known once a shell is built
        self._mlp_s: float | None = None

    def _shell(self, layers: int):
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = {k: v for k, v in self.config.items() if k not in ("architectures", "torch_dtype", "dtype")}
        cfg["num_hidden_layers"] = layers
        for key in ("n_layer", "num_layers"):  # GPT-2's and others' names for the same field
            if key in cfg:
                cfg[key] = layers
        if isinstance(cfg.get("layer_types"), list):  # per-layer lists (Qwen2's sliding windows) shrink too
            cfg["layer_types"] = cfg["layer_types"][:layers]
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        return AutoModelForCausalLM.from_config(config).float().eval()

    def token_s(self) -> float:
        """The source's time per generated token, extrapolated from one- and two-block shells."""
        two = self._shell(2)
        with torch.device("meta"):  # the one-block shell borrows all its tensors from the two-block one
            one = self._shell(1)
        borrowed = {**dict(two.named_parameters(remove_duplicate=False)),
                    **dict(two.named_buffers(remove_duplicate=False))}
        for name, _ in [*one.named_parameters(remove_duplicate=False), *one.named_buffers(remove_duplicate=False)]:
            module, _, leaf = name.rpartition(".")
            setattr(one.get_submodule(module), leaf, borrowed[name])
        shells = [one, two]
        ids = torch.tensor([[1, 2, 3, 4]])
        times: list[list[float]] = [[], []]
        with torch.no_grad():
            for m in shells:  # warm-up
                self._generate(m, ids)
            for _ in range(_REPS):
                for k, m in enumerate(shells):
                    times[k].append(self._generate(m, ids))
        mlp = shells[0].get_submodule(mlp_module_name(self.arch.family, 0))
        self._mlp_s = self._module_s(mlp)
        fam, names = self.arch.family, set(mlp.state_dict())
        local = lambda role: role.split(".", 1)[1]  # noqa: E731  ("mlp.gate_proj" → "gate_proj")
        self.layout = MlpLayout(gated=fam.gate is not None, in_bias=f"{local(fam.gate or fam.up)}.bias" in names,
                                down_bias=f"{local(fam.down)}.bias" in names)
        t1, t2 = (min(t) for t in times)
        return t1 + (self.arch.dims.layers - 1) * max(t2 - t1, 0.0)

    @staticmethod
    def _generate(model, ids) -> float:
        start = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=_TOKENS, min_new_tokens=_TOKENS,
                       do_sample=False, pad_token_id=0)
        return (time.perf_counter() - start) / _TOKENS

    def mlp_s(self) -> float:
        if self._mlp_s is None:
            self.token_s()
        return self._mlp_s

    def taylor_s(self, n_terms: int, fraction: float) -> float:
        """One token through a TaylorMLP of the release's shapes for (n_terms, fraction)."""
        d = self.arch.dims
        if self.layout is None:
            self.token_s()
        s = int(round(fraction * d.intermediate))
        pool = max(2, min(n_terms + 1, _POOL_BYTES // max(4 * d.hidden * s, 1)))
        shapes = self.layout.shapes(d.hidden, s, d.intermediate - s, pool - 1)
        g = torch.Generator().manual_seed(0)
        tensors = {k: torch.randn(*v, generator=g).mul_(0.02) for k, v in shapes.items()}
        tensors["guard_radius"] = torch.full((s,), 1.0)
        module = _PooledTaylorMLP(tensors, self.arch.activation, guard_order=2)
        module.n_terms = n_terms
        return self._module_s(module)

    def _module_s(self, module) -> float:
        x = torch.randn(1, 1, self.arch.dims.hidden)
        with torch.no_grad():
            module(x)
            calls = 1
            while True:  # enough calls for ≥ 50 ms, so timer resolution does not matter
                start = time.perf_counter()
                for _ in range(calls):
                    module(x)
                if time.perf_counter() - start >= 0.05:
                    break
                calls *= 2
            samples = []
            for _ in range(_REPS):
                start = time.perf_counter()
                for _ in range(calls):
                    module(x)
                samples.append((time.perf_counter() - start) / calls)
        return min(samples)


class _PooledTaylorMLP(TaylorMLP):
    """A TaylorMLP of n_terms orders whose order n reads Θ_{n mod pool}: the same products as a
    release's, in less memory. The pool holds every order if they fit in _POOL_BYTES, and else
    hundreds of MB (a few orders of ≥ 100 MB each), far more than any cache, so each order's matrix
    still comes from main memory, as a release's does."""

    def theta(self, n: int) -> torch.Tensor:
        return self.coeffs[n % self.coeffs.shape[0]]


def choose(config: dict, target: float, *, fraction_ceiling: float, threads: int = 1,
           strict: bool = True) -> Throttle:
    """The (N, fraction) whose measured slowdown on `config`'s shape reaches `target`, within the
    fidelity bounds of the module docstring. If none does: ZkfpError naming the bound, or with
    `strict=False` the nearest, N = MAX_TERMS at the ceiling fraction (its figure tells how near)."""
    if not (isinstance(target, (int, float)) and math.isfinite(target)) or target < 1:
        raise ZkfpError(f"--slowdown must be a number ≥ 1 (got {target!r}): a release cannot run faster than "
                        "its source")
    with _threads(threads):
        timer = ShapeTimer(config)
        token = timer.token_s()
        mlp = timer.mlp_s()
        layers = timer.arch.dims.layers

        def slowdown(n: int, f: float) -> float:
            return 1 + layers * (timer.taylor_s(n, f) - mlp) / token

        def result(n: int, f: float, s: float) -> Throttle:
            return Throttle(float(target), n, f, round(s, 3), round(token * 1e3, 3), threads)

        def nearest_or_refuse(reach: float) -> Throttle:
            if not strict:
                return result(MAX_TERMS, fraction_ceiling, slowdown(MAX_TERMS, fraction_ceiling))
            raise ZkfpError(
                f"--slowdown {target:g} is unreachable within fidelity on this shape with {threads} thread(s): "
                f"at most N = {MAX_TERMS} terms (the release format's limit) at an expanded fraction of "
                f"{fraction_ceiling:.2f} (the ceiling: the largest fraction whose fidelity was measured, unless "
                f"you pass a larger --fraction) gives about {reach:.2f}x")

        at_ceiling = slowdown(MIN_TERMS, fraction_ceiling)
        if at_ceiling >= target:
            # Lever 1: fewer expanded neurons at N = MIN_TERMS. The slowdown is affine in f through (0, 1).
            f = fraction_ceiling * (target - 1) / max(at_ceiling - 1, 1e-9)
            f = min(math.ceil(f * 100) / 100, fraction_ceiling)
            while f < fraction_ceiling:
                s = slowdown(MIN_TERMS, f)
                if s >= target:
                    return result(MIN_TERMS, f, s)
                f = min(f + 0.01, fraction_ceiling)
            return result(MIN_TERMS, fraction_ceiling, at_ceiling)
        # Lever 2: more terms at the ceiling fraction. The slowdown is affine in N.
        step = (slowdown(MIN_TERMS + 4, fraction_ceiling) - at_ceiling) / 4
        needed = MIN_TERMS + (target - at_ceiling) / step if step > 0 else math.inf
        if needed > MAX_TERMS:
            return nearest_or_refuse(at_ceiling + step * (MAX_TERMS - MIN_TERMS))
        n = min(MAX_TERMS, MIN_TERMS + 2 * math.ceil((needed - MIN_TERMS) / 2))
        while (s := slowdown(n, fraction_ceiling)) < target:
            if n >= MAX_TERMS:
                return nearest_or_refuse(s)
            n += 2
        return result(n, fraction_ceiling, s)
