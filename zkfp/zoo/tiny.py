"""Build, train and save tiny transformers checkpoints of each supported family."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from zkfp.zoo.tokenizer import VOCAB_SIZE, load_tokenizer

FAMILIES = ("llama", "mistral", "qwen2", "gpt2", "gpt_neox", "bert")


def tiny_config(family: str, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate: int | None = None, vocab: int = VOCAB_SIZE, max_positions: int = 256,
                tied: bool | None = None):
    """A transformers config of the given family at toy size (GQA where the family has it); `tied`
    ties the output head to the embedding (None: as GPT-2 and BERT do, the others not)."""
    from transformers import (BertConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, MistralConfig,
                              Qwen2Config)

    if family in ("llama", "mistral", "qwen2"):
        cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[family]
        return cls(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate or int(hidden * 8 / 3),
                   num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                   max_position_embeddings=max_positions, tie_word_embeddings=bool(tied), bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate,
                          n_positions=max_positions, bos_token_id=0, eos_token_id=0, tie_word_embeddings=tied is not False)
    if family == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                             max_position_embeddings=max_positions, bos_token_id=0, eos_token_id=0,
                             tie_word_embeddings=bool(tied))
    if family == "bert":
        return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=intermediate or 4 * hidden, max_position_embeddings=max_positions)
    raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES}")


def build(family: str, seed: int = 0, **config_kw):
    """A freshly initialised tiny model (deterministic in `seed`)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    config = tiny_config(family, **config_kw)
    torch.manual_seed(seed)
    auto = AutoModelForMaskedLM if family == "bert" else AutoModelForCausalLM
    model = auto.from_config(config)
    return model.float().eval()


def encode(text: str) -> torch.Tensor:
    return torch.tensor(load_tokenizer()(text)["input_ids"], dtype=torch.long)


def train(model, token_ids: torch.Tensor, steps: int = 300, seq_len: int = 64, batch: int = 16,
          lr: float = 3e-3, seed: int = 0, params=None, weight_decay: float = 0.0):
    """Train briefly with next-token loss (masked-token loss for encoders). Deterministic in `seed`.

    `params` restricts what is trained (e.g. LoRA adapters); by default everything is.
    """
    gen = torch.Generator().manual_seed(seed)
    params = list(params) if params is not None else list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * 0.1)
    masked_lm = model.config.model_type == "bert"
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(token_ids) - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([token_ids[s : s + seq_len] for s in starts])
        if masked_lm:
            mask = torch.rand(x.shape, generator=gen) < 0.15
            labels = torch.where(mask, x, torch.full_like(x, -100))
            loss = model(input_ids=x.masked_fill(mask, 0), labels=labels).loss
        else:
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model


def save(model, out_dir: str | os.PathLike, dtype: torch.dtype | None = None,
         max_shard_size: str | int | None = None) -> Path:
    """Write a real transformers checkpoint (config + safetensors, optionally sharded) with tokenizer."""
    out = Path(out_dir)
    if dtype is not None:
        model = model.to(dtype)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(out, **kwargs)
    load_tokenizer().save_pretrained(out)
    return out


def make_trained(family: str, out_dir: str | os.PathLike, *, seed: int = 0, domain="forest", steps: int = 300,
                 dtype: torch.dtype | None = None, max_shard_size=None, lr: float = 3e-3,
                 weight_decay: float = 0.0, **config_kw) -> Path:
    """Build, train on generated text, and save: the one-call recipe tests use."""
    from zkfp.zoo.corpus import generate

    model = build(family, seed=seed, **config_kw)
    train(model, encode(generate(domain, n_sentences=3000, seed=seed)), steps=steps, seed=seed, lr=lr,
          weight_decay=weight_decay)
    return save(model, out_dir, dtype=dtype, max_shard_size=max_shard_size)
