"""Offspring makers for the evaluation zoo: a hand-written LoRA (train, merge), magnitude pruning
and an int8 round-trip (these change the model in place), and structural derivations that
return a new model and leave their input unchanged: vocabulary extension, dropping or
duplicating a block, MLP width pruning, GQA → MHA, and weight averaging. All in torch on
transformers Llama-family and GPT-2 models, deterministic in their seeds.
"""

from __future__ import annotations

import copy

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


# -- structural derivations (each returns a new model; the input is left unchanged) -----------------
def _is_gpt2(model) -> bool:
    return model.config.model_type == "gpt2"


def _blocks(model) -> torch.nn.ModuleList:
    return model.transformer.h if _is_gpt2(model) else model.model.layers


def _renumber(model) -> None:
    """Give each attention module its new position (the KV cache is indexed by `layer_idx`) and
    keep `num_hidden_layers` (GPT-2: `n_layer`) equal to the number of blocks."""
    blocks = _blocks(model)
    for i, blk in enumerate(blocks):
        (blk.attn if _is_gpt2(model) else blk.self_attn).layer_idx = i
    model.config.num_hidden_layers = len(blocks)


def extend_vocab(model, n_new: int, seed: int = 0, noise: float = 0.1):
    """Append `n_new` token rows to the input embedding and the LM head (tied heads follow the
    embedding), each the mean of the existing rows plus Gaussian noise of `noise` × their
    per-coordinate standard deviation (the usual initialisation: the new tokens start as an
    "average token", which barely changes the next-token distribution over old ids).
    `config.vocab_size` becomes old + n_new. The new rows still have to be trained."""
    model = copy.deepcopy(model)
    old = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(seed)
    keep_in = model.get_input_embeddings().weight.detach().clone()
    head = model.get_output_embeddings()
    tied = head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    keep_out = None if tied else head.weight.detach().clone()
    model.resize_token_embeddings(old + n_new, mean_resizing=False)

    def fill(W: torch.Tensor, rows: torch.Tensor) -> None:
        mean, std = rows.mean(0), rows.std(0)
        W[:old] = rows
        W[old:] = mean + noise * std * torch.randn(n_new, rows.shape[1], generator=gen, dtype=rows.dtype)

    with torch.no_grad():
        fill(model.get_input_embeddings().weight, keep_in)
        if keep_out is not None:
            fill(model.get_output_embeddings().weight, keep_out)
    model.config.vocab_size = old + n_new
    return model


def drop_layer(model, index: int = -1):
    """Remove block `index` (−1: the last). Heal afterwards by training (`zkfp.zoo.tiny.train`)."""
    model = copy.deepcopy(model)
    blocks = _blocks(model)
    if len(blocks) < 2:
        raise ValueError("cannot drop the only block")
    del blocks[index % len(blocks)]
    _renumber(model)
    return model


def insert_layer_copy(model, index: int, identity: bool = False):
    """Depth up-scaling: a copy of block `index` inserted right after it (so the model computes
    block `index` twice; the logits change). With `identity`, the copy's output projections
    (attention out and MLP down, with their biases) are zeroed, as in LLaMA Pro, so the new block
    adds nothing to the residual stream and the logits are unchanged until it is trained."""
    model = copy.deepcopy(model)
    blocks = _blocks(model)
    index = index % len(blocks)
    new = copy.deepcopy(blocks[index])
    if identity:
        outs = (new.attn.c_proj, new.mlp.c_proj) if _is_gpt2(model) else (new.self_attn.o_proj, new.mlp.down_proj)
        with torch.no_grad():
            for mod in outs:
                mod.weight.zero_()
                if getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()
    blocks.insert(index + 1, new)
    _renumber(model)
    return model


def _sliced_linear(lin: torch.nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None):
    W = lin.weight.detach()
    W = W if rows is None else W[rows]
    W = W if cols is None else W[:, cols]
    out = torch.nn.Linear(W.shape[1], W.shape[0], bias=lin.bias is not None, dtype=W.dtype)
    with torch.no_grad():
        out.weight.copy_(W)
        if lin.bias is not None:
            out.bias.copy_(lin.bias.detach() if rows is None else lin.bias.detach()[rows])
    return out


def width_prune(model, fraction: float = 0.25):
    """Structured MLP pruning: in every block remove the `fraction` of neurons with the smallest
    norm score ‖input weights‖·‖output weights‖ (for gated MLPs ‖gate‖·‖up‖·‖down‖, biases
    included in the inputs), the same number per block so that `intermediate_size` shrinks
    uniformly; kept neurons keep their order. Heal afterwards by training."""
    from transformers.pytorch_utils import Conv1D

    model = copy.deepcopy(model)
    gpt2 = _is_gpt2(model)
    first = _blocks(model)[0].mlp
    size = first.c_fc.weight.shape[1] if gpt2 else first.up_proj.weight.shape[0]
    keep = size - int(round(fraction * size))
    if not 0 < keep <= size:
        raise ValueError(f"fraction {fraction} leaves {keep} of {size} neurons")
    with torch.no_grad():
        for blk in _blocks(model):
            mlp = blk.mlp
            if gpt2:  # Conv1D stores (in, out): c_fc (H, I) + bias (I); c_proj (I, H)
                w_in = torch.cat([mlp.c_fc.weight, mlp.c_fc.bias[None]], 0)
                score = w_in.norm(dim=0) * mlp.c_proj.weight.norm(dim=1)
                idx = score.topk(keep).indices.sort().values
                fc, proj = Conv1D(keep, mlp.c_fc.weight.shape[0]), Conv1D(mlp.c_proj.weight.shape[1], keep)
                fc.weight.copy_(mlp.c_fc.weight[:, idx]), fc.bias.copy_(mlp.c_fc.bias[idx])
                proj.weight.copy_(mlp.c_proj.weight[idx]), proj.bias.copy_(mlp.c_proj.bias)
                mlp.c_fc, mlp.c_proj = fc.to(mlp.c_proj.weight.dtype), proj.to(mlp.c_proj.weight.dtype)
            else:
                score = mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)
                idx = score.topk(keep).indices.sort().values
                mlp.gate_proj = _sliced_linear(mlp.gate_proj, rows=idx)
                mlp.up_proj = _sliced_linear(mlp.up_proj, rows=idx)
                mlp.down_proj = _sliced_linear(mlp.down_proj, cols=idx)
                mlp.intermediate_size = keep
    if gpt2:
        model.config.n_inner = keep
    else:
        model.config.intermediate_size = keep
    return model


def gqa_to_mha(model):
    """Llama-family GQA → MHA: each K/V head duplicated for the query heads that share it (the
    grouping transformers' `repeat_kv` uses: query head h reads KV head h // groups), so
    num_key_value_heads == num_attention_heads and the logits are unchanged."""
    if _is_gpt2(model):
        raise ValueError("GPT-2 has no grouped-query attention")
    model = copy.deepcopy(model)
    heads, kv = model.config.num_attention_heads, model.config.num_key_value_heads
    groups = heads // kv
    for blk in _blocks(model):
        attn = blk.self_attn
        hd = attn.head_dim
        for name in ("k_proj", "v_proj"):
            lin = getattr(attn, name)
            W = lin.weight.detach().reshape(kv, hd, -1).repeat_interleave(groups, 0).reshape(heads * hd, -1)
            new = torch.nn.Linear(W.shape[1], W.shape[0], bias=lin.bias is not None, dtype=W.dtype)
            with torch.no_grad():
                new.weight.copy_(W)
                if lin.bias is not None:
                    new.bias.copy_(lin.bias.detach().reshape(kv, hd).repeat_interleave(groups, 0).reshape(-1))
            setattr(attn, name, new)
        attn.num_key_value_groups = 1
    model.config.num_key_value_heads = heads
    return model


def merge(model_a, model_b, alpha: float = 0.5):
    """Weight average alpha·a + (1 − alpha)·b of two models of identical shapes (e.g. two
    fine-tunes of one base: a "model soup"). Returns a new model with a's config."""
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError("merge needs two models with the same parameter names and shapes")
    out = copy.deepcopy(model_a)
    out.load_state_dict({k: alpha * sa[k] + (1 - alpha) * sb[k] if sa[k].is_floating_point() else sa[k] for k in sa})
    return out
