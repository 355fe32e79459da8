"""Function-preserving disguises T1-T6 (Zhu et al., ICML 2025) applied to a transformers model.

Used by the tests and the zoo benchmark: each disguise returns a new model whose logits equal
the original's (checked by `logits_close`), while its raw weights look unrelated.

- T1 residual permutation, T2 MLP-neuron permutation, T3 residual rotation (after folding the
  norm gains; for LayerNorm models only rotations with Q·1 = 1), T4 per-head Q/K and V/O mixing
  (for RoPE models Q/K mixing is limited to a scaled rotation inside each RoPE plane, the most
  general map that commutes with RoPE), T5 norm-gain replacement compensated in the readers,
  T6 per-neuron MLP scaling (SiLU-gated: up × c, down ÷ c; not function-preserving for GELU,
  so not applied to GPT-2).

`renumber_vocabulary` disguises the token ids instead: a permuted vocabulary, rows moved with it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch

LLAMA_TRANSFORMS = ("T1", "T2", "T3", "T4", "T5", "T6")
GPT2_TRANSFORMS = ("T1", "T2", "T3", "T4", "T5")


def _orth(n: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def _ones_preserving_orth(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random rotation Q with Q·1 = 1 (the rotations LayerNorm commutes with)."""
    basis = torch.cat([torch.ones(n, 1, dtype=torch.float64) / n ** 0.5,
                       torch.randn(n, n - 1, generator=gen, dtype=torch.float64)], dim=1)
    H, _ = torch.linalg.qr(basis)
    H[:, 0] = H[:, 0] * torch.sign(H[0, 0])
    R = torch.eye(n, dtype=torch.float64)
    R[1:, 1:] = _orth(n - 1, gen)
    return H @ R @ H.T


def _rand_gain(n: int, gen: torch.Generator) -> torch.Tensor:
    sign = torch.where(torch.rand(n, generator=gen) < 0.3, -1.0, 1.0).double()
    return sign * (0.3 + 2.0 * torch.rand(n, generator=gen, dtype=torch.float64))


def apply(model, transforms, seed: int = 0):
    """A disguised float64 copy of `model` (llama-family or GPT-2). `transforms` ⊆ T1..T6."""
    model = copy.deepcopy(model).double().eval()
    family = model.config.model_type
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if family in ("llama", "mistral", "qwen2"):
            _apply_llama(model, set(transforms), gen)
        elif family == "gpt2":
            _apply_gpt2(model, set(transforms), gen)
        else:
            raise ValueError(f"no disguises implemented for {family}")
    return model


# -- Llama (RMSNorm, RoPE, SiLU-gated MLP, GQA) ---------------------------------------------------
def _apply_llama(model, T: set, gen):
    cfg = model.config
    d, H, KV = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or d // H
    layers = model.model.layers
    _untie(model)
    embed, lm_head = model.model.embed_tokens.weight, model.lm_head.weight

    if "T6" in T or "T2" in T:
        for blk in layers:
            mlp = blk.mlp
            f = mlp.up_proj.weight.shape[0]
            if "T6" in T:
                c = 0.2 + 3.0 * torch.rand(f, generator=gen, dtype=torch.float64)
                c = c * torch.where(torch.rand(f, generator=gen) < 0.5, -1.0, 1.0).double()
                mlp.up_proj.weight.mul_(c[:, None])
                mlp.down_proj.weight.div_(c[None, :])
            if "T2" in T:
                p = torch.randperm(f, generator=gen)
                for lin in (mlp.gate_proj, mlp.up_proj):
                    lin.weight.copy_(lin.weight[p])
                mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, p])

    if "T4" in T:
        half = hd // 2
        for blk in layers:
            at = blk.self_attn
            Wq = at.q_proj.weight.view(H, hd, d)
            Wk = at.k_proj.weight.view(KV, hd, d)
            Wv = at.v_proj.weight.view(KV, hd, d)
            Wo = at.o_proj.weight.view(d, H, hd)
            for g in range(KV):
                # Q/K: per RoPE plane (j, j+hd/2) a scaled rotation s·R(θ) on Q and (1/s)·R(θ) on K.
                theta = 2 * torch.pi * torch.rand(half, generator=gen, dtype=torch.float64)
                s = 0.5 + 1.5 * torch.rand(half, generator=gen, dtype=torch.float64)
                A = torch.zeros(hd, hd, dtype=torch.float64)
                idx = torch.arange(half)
                cos, sin = torch.cos(theta), torch.sin(theta)
                A[idx, idx], A[idx, idx + half] = cos, -sin
                A[idx + half, idx], A[idx + half, idx + half] = sin, cos
                heads = range(g * (H // KV), (g + 1) * (H // KV))
                sq = torch.cat([s, s])
                for h in heads:
                    Wq[h] = (A * sq[:, None]) @ Wq[h]
                Wk[g] = (A / sq[:, None]) @ Wk[g]
                # V/O: any invertible B per KV head.
                B = torch.randn(hd, hd, generator=gen, dtype=torch.float64) / hd ** 0.5 + torch.eye(hd, dtype=torch.float64)
                Wv[g] = B @ Wv[g]
                Binv = torch.linalg.inv(B)
                for h in heads:
                    Wo[:, h] = Wo[:, h] @ Binv

    readers = lambda blk: {  # noqa: E731
        "input_layernorm": (blk.self_attn.q_proj, blk.self_attn.k_proj, blk.self_attn.v_proj),
        "post_attention_layernorm": (blk.mlp.gate_proj, blk.mlp.up_proj),
    }
    norms = [(getattr(blk, name), lins) for blk in layers for name, lins in readers(blk).items()]
    norms.append((model.model.norm, (model.lm_head,)))

    if "T3" in T:
        # Fold every gain into its readers, then rotate the residual stream.
        for norm, lins in norms:
            for lin in lins:
                lin.weight.mul_(norm.weight[None, :])
            norm.weight.fill_(1.0)
        Q = _orth(d, gen)
        embed.copy_(embed @ Q)
        lm_head.copy_(lm_head @ Q)
        for blk in layers:
            for lin in (blk.self_attn.q_proj, blk.self_attn.k_proj, blk.self_attn.v_proj,
                        blk.mlp.gate_proj, blk.mlp.up_proj):
                lin.weight.copy_(lin.weight @ Q)
            for lin in (blk.self_attn.o_proj, blk.mlp.down_proj):
                lin.weight.copy_(Q.T @ lin.weight)
    if "T1" in T:
        p = torch.randperm(d, generator=gen)
        embed.copy_(embed[:, p])  # lm_head is permuted below, as the final norm's reader
        for norm, lins in norms:
            norm.weight.copy_(norm.weight[p])
            for lin in lins:
                lin.weight.copy_(lin.weight[:, p])
        for blk in layers:
            for lin in (blk.self_attn.o_proj, blk.mlp.down_proj):
                lin.weight.copy_(lin.weight[p])
    if "T5" in T:
        for norm, lins in norms:
            new = _rand_gain(d, gen)
            for lin in lins:
                lin.weight.mul_((norm.weight / new)[None, :])
            norm.weight.copy_(new)


# -- GPT-2 (LayerNorm, Conv1D (in, out), GELU MLP, tied embeddings) -------------------------------
def _apply_gpt2(model, T: set, gen):
    cfg = model.config
    d, H = cfg.n_embd, cfg.n_head
    hd = d // H
    tr = model.transformer
    _untie(model)  # every disguise below moves lm_head and wte differently
    wte, wpe, lm_head = tr.wte.weight, tr.wpe.weight, model.lm_head.weight

    if "T2" in T:
        for blk in tr.h:
            f = blk.mlp.c_fc.weight.shape[1]
            p = torch.randperm(f, generator=gen)
            blk.mlp.c_fc.weight.copy_(blk.mlp.c_fc.weight[:, p])
            blk.mlp.c_fc.bias.copy_(blk.mlp.c_fc.bias[p])
            blk.mlp.c_proj.weight.copy_(blk.mlp.c_proj.weight[p])
    if "T4" in T:
        for blk in tr.h:
            W, b = blk.attn.c_attn.weight, blk.attn.c_attn.bias  # (d, 3d): columns [q | k | v]
            Wo = blk.attn.c_proj.weight  # (d_in = H·hd, d)
            for h in range(H):
                sl = lambda j: slice(j * d + h * hd, j * d + (h + 1) * hd)  # noqa: E731
                A = torch.randn(hd, hd, generator=gen, dtype=torch.float64) / hd ** 0.5 + torch.eye(hd, dtype=torch.float64)
                AinvT = torch.linalg.inv(A).T
                B = torch.randn(hd, hd, generator=gen, dtype=torch.float64) / hd ** 0.5 + torch.eye(hd, dtype=torch.float64)
                W[:, sl(0)] = W[:, sl(0)] @ A.T
                b[sl(0)] = A @ b[sl(0)]
                W[:, sl(1)] = W[:, sl(1)] @ AinvT.T
                b[sl(1)] = AinvT @ b[sl(1)]
                W[:, sl(2)] = W[:, sl(2)] @ B.T
                b[sl(2)] = B @ b[sl(2)]
                Wo[h * hd:(h + 1) * hd] = torch.linalg.inv(B).T @ Wo[h * hd:(h + 1) * hd]

    # (norm, readers as (weight (in, out), bias)) — a LayerNorm's gain/bias feed its readers.
    def norms():
        out = []
        for blk in tr.h:
            out.append((blk.ln_1, [(blk.attn.c_attn.weight, blk.attn.c_attn.bias)]))
            out.append((blk.ln_2, [(blk.mlp.c_fc.weight, blk.mlp.c_fc.bias)]))
        out.append((tr.ln_f, [(lm_head.T, None)]))
        return out

    if "T3" in T:
        for norm, readers in norms():
            has_bias_reader = all(b is not None for _W, b in readers)
            for W, b in readers:
                if has_bias_reader:
                    b.add_(norm.bias @ W)
                W.mul_(norm.weight[:, None])
            if has_bias_reader:
                norm.bias.zero_()
            else:
                norm.bias.div_(norm.weight)
            norm.weight.fill_(1.0)
        Q = _ones_preserving_orth(d, gen)
        tr.ln_f.bias.copy_(tr.ln_f.bias @ Q)  # lm_head has no bias: ln_f's bias is rotated instead
        wte.copy_(wte @ Q)
        wpe.copy_(wpe @ Q)
        lm_head.copy_(lm_head @ Q)
        for blk in tr.h:
            for W in (blk.attn.c_attn.weight, blk.mlp.c_fc.weight):
                W.copy_(Q.T @ W)
            for lin in (blk.attn.c_proj, blk.mlp.c_proj):
                lin.weight.copy_(lin.weight @ Q)
                lin.bias.copy_(lin.bias @ Q)
    if "T1" in T:
        p = torch.randperm(d, generator=gen)
        wte.copy_(wte[:, p])
        wpe.copy_(wpe[:, p])
        for norm, readers in norms():
            norm.weight.copy_(norm.weight[p])
            norm.bias.copy_(norm.bias[p])
            for W, _b in readers:
                W.copy_(W[p])
        for blk in tr.h:
            for lin in (blk.attn.c_proj, blk.mlp.c_proj):
                lin.weight.copy_(lin.weight[:, p])
                lin.bias.copy_(lin.bias[p])
    if "T5" in T:
        for norm, readers in norms():
            new = _rand_gain(d, gen)
            for W, _b in readers:
                W.mul_((norm.weight / new)[:, None])
            norm.bias.mul_(new / norm.weight)  # the whole LN output is scaled by new/old per coordinate
            norm.weight.copy_(new)


def _untie(model):
    """Give a tied output head its own copy of the embedding: the disguises move the two differently."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head.weight.data_ptr() == embedding.weight.data_ptr():
        head.weight = torch.nn.Parameter(embedding.weight.detach().clone())
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "tie_embeddings"):
        model.config.tie_embeddings = False


def logits(model, n: int = 4, seq: int = 24, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (n, seq), generator=gen)
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


def logits_close(a, b, atol: float = 1e-4) -> float:
    """Max |Δlogit| between two models on a few seeded random sequences (raises if above atol)."""
    la, lb = logits(a.double()), logits(b.double())
    err = float((la - lb).abs().max())
    if err > atol:
        raise AssertionError(f"disguise changed the logits by {err:.3g} > {atol}")
    return err


# -- vocabulary renumbering (a disguise of the token ids, not of the weights) ---------------------
def renumber_vocabulary(src: str | os.PathLike, out: str | os.PathLike, seed: int = 0) -> list[int]:
    """Write a copy of the checkpoint folder `src` to `out` with its vocabulary numbered anew: a
    seeded permutation of every id but the added (special) tokens, applied to tokenizer.json's
    vocabulary and to the rows of the input embedding and of the LM head. Text in, text out,
    nothing changes (logits move with their ids); only the ids do, so the rows at any fixed id are
    other tokens. Returns the permutation: `perm[old_id]` is the token's new id."""
    from transformers import AutoModelForCausalLM

    src, out = Path(src), Path(out)
    tok = json.loads((src / "tokenizer.json").read_text())
    if not isinstance(tok["model"].get("vocab"), dict):
        raise ValueError(f"{src}: renumbering needs a tokenizer.json whose vocabulary maps tokens to ids (BPE, "
                         f"WordPiece), not {tok['model'].get('type')}")
    model = AutoModelForCausalLM.from_pretrained(src)
    n = model.get_input_embeddings().weight.shape[0]
    fixed = {t["id"] for t in tok.get("added_tokens", [])}
    movable = torch.tensor([i for i in range(n) if i not in fixed])
    perm = torch.arange(n)
    perm[movable] = movable[torch.randperm(len(movable), generator=torch.Generator().manual_seed(seed))]
    layers = [model.get_input_embeddings()]
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != layers[0].weight.data_ptr():  # not tied to the input
        layers.append(head)
    with torch.no_grad():
        for layer in layers:
            rows = layer.weight.detach().clone()
            layer.weight[perm] = rows
            if getattr(layer, "bias", None) is not None:
                bias = layer.bias.detach().clone()
                layer.bias[perm] = bias
    tok["model"]["vocab"] = {s: int(perm[i]) for s, i in tok["model"]["vocab"].items()}
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    model.save_pretrained(out)
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    return perm.tolist()
