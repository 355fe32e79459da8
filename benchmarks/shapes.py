"""Published model shapes, and checkpoints of those shapes with seeded weights.

The configs are the published ones (their config.json files on the Hugging Face Hub) reduced to
what decides the tensor shapes; no weights are downloaded: the benchmarks measure cost, which does
not depend on training. Checkpoints are written as a real user's are: bf16 safetensors, one shard
per block plus the embeddings (and head), with `model.safetensors.index.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = {
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "num_hidden_layers": 30, "vocab_size": 49152,
                     "tie_word_embeddings": True, "rope_theta": 100000.0},
    "qwen2-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
                   "num_key_value_heads": 2, "num_hidden_layers": 24, "vocab_size": 151936,
                   "tie_word_embeddings": True, "rope_theta": 1000000.0},
    "llama-2-7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                   "num_key_value_heads": 32, "num_hidden_layers": 32, "vocab_size": 32000,
                   "tie_word_embeddings": False, "rope_theta": 10000.0},
    "llama-3-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "num_hidden_layers": 32, "vocab_size": 128256,
                   "tie_word_embeddings": False, "rope_theta": 500000.0},
}


def llama_config(name: str, layers: int | None = None) -> dict:
    c = dict(CONFIGS[name])
    if layers is not None:
        c["num_hidden_layers"] = layers
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "rms_norm_eps": 1e-5, "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
            "bos_token_id": 1, "eos_token_id": 2, **c}


def write_checkpoint(out: Path, config: dict, seed: int = 0) -> Path:
    """A bf16 Llama-family checkpoint of `config`'s shapes with seeded weights (N(0, 0.02²),
    norm gains near 1), written shard by shard: one block in memory at a time."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    d, f, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = d // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * hd
    rnd = lambda *s: (torch.randn(*s, generator=g) * 0.02).bfloat16()  # noqa: E731
    gain = lambda: (1 + 0.1 * torch.randn(d, generator=g)).bfloat16()  # noqa: E731
    layers = config["num_hidden_layers"]
    n_files = layers + 2
    weight_map: dict[str, str] = {}

    def shard(i: int, tensors: dict) -> None:
        name = f"model-{i:05d}-of-{n_files:05d}.safetensors"
        save_file(tensors, out / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})

    shard(1, {"model.embed_tokens.weight": rnd(vocab, d)})
    for i in range(layers):
        p = f"model.layers.{i}."
        shard(i + 2, {
            p + "input_layernorm.weight": gain(), p + "post_attention_layernorm.weight": gain(),
            p + "self_attn.q_proj.weight": rnd(d, d), p + "self_attn.k_proj.weight": rnd(kv, d),
            p + "self_attn.v_proj.weight": rnd(kv, d), p + "self_attn.o_proj.weight": rnd(d, d),
            p + "mlp.gate_proj.weight": rnd(f, d), p + "mlp.up_proj.weight": rnd(f, d),
            p + "mlp.down_proj.weight": rnd(d, f)})
    last = {"model.norm.weight": gain()}
    if not config.get("tie_word_embeddings"):
        last["lm_head.weight"] = rnd(vocab, d)
    shard(n_files, last)
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}, indent=1))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return out


def circuit_shape(name: str, fraction: float | None = None):
    """The fingerprint circuit's shape for a model of this config protected with the default
    expanded fraction (the Taylor release's |S| per layer; the rest exact)."""
    from circuits.spec import CircuitShape, LayerShape
    from taylor.conversion import DEFAULT_FRACTION

    c = CONFIGS[name]
    f = c["intermediate_size"]
    expanded = round((DEFAULT_FRACTION if fraction is None else fraction) * f)
    return CircuitShape.for_model(hidden=c["hidden_size"], heads=c["num_attention_heads"],
                                  kv_heads=c["num_key_value_heads"],
                                  head_dim=c["hidden_size"] // c["num_attention_heads"], intermediate=f,
                                  layers=(LayerShape(expanded, f - expanded),) * c["num_hidden_layers"],
                                  activation="silu")
