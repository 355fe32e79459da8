"""Offspring makers for the evaluation zoo: a hand-written LoRA (train, merge), magnitude pruning
and an int8 round-trip. All in torch on the tiny models, deterministic in their seeds."""

from __future__ import annotations

import torch

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPT2_TARGETS = ("c_attn", "c_proj", "c_fc")


def _targets(model):
    names = LLAMA_TARGETS if model.config.model_type != "gpt2" else GPT2_TARGETS
    for name, mod in model.named_modules():
        if name.split(".")[-1] in names and hasattr(mod, "weight") and mod.weight.dim() == 2:
            yield name, mod


def _shape(mod) -> tuple[int, int]:
    """(out, in) of a Linear or a transformers Conv1D (stored (in, out))."""
    w = mod.weight
    return (w.shape[1], w.shape[0]) if type(mod).__name__ == "Conv1D" else (w.shape[0], w.shape[1])


def lora_finetune(model, token_ids: torch.Tensor, rank: int = 4, alpha: float = 8.0, steps: int = 150,
                  lr: float = 1e-2, seed: int = 0):
    """Train rank-`rank` adapters (W + (alpha/rank)·B·A, B initialised to 0) on every attention/MLP
    projection with the base frozen, then merge them into the weights. Returns the model."""
    from zkfp.zoo.tiny import train

    gen = torch.Generator().manual_seed(seed)
    scale = alpha / rank
    adapters, hooks = [], []
    for p in model.parameters():
        p.requires_grad_(False)
    for _name, mod in _targets(model):
        out_f, in_f = _shape(mod)
        A = torch.nn.Parameter(torch.randn(rank, in_f, generator=gen) / in_f ** 0.5)
        B = torch.nn.Parameter(torch.zeros(out_f, rank))
        adapters.append((mod, A, B))
        hooks.append(mod.register_forward_hook(lambda m, inp, out, A=A, B=B: out + scale * (inp[0] @ A.T) @ B.T))
    params = [t for _m, A, B in adapters for t in (A, B)]
    train(model, token_ids, steps=steps, lr=lr, seed=seed, params=params)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for mod, A, B in adapters:
            delta = scale * (B @ A)
            mod.weight.add_(delta.T if type(mod).__name__ == "Conv1D" else delta)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def magnitude_prune(model, fraction: float = 0.3):
    """Zero the `fraction` smallest-magnitude entries of every 2-D weight inside the blocks."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and (".layers." in name or ".h." in name):
                k = int(fraction * p.numel())
                if k:
                    cut = p.abs().flatten().kthvalue(k).values
                    p.masked_fill_(p.abs() <= cut, 0.0)
    return model


def int8_roundtrip(model):
    """Quantise every 2-D weight to int8 (symmetric, per output row absmax) and back."""
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.dim() == 2:
                s = p.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
                p.copy_(torch.round(p / s).clamp(-127, 127) * s)
    return model
