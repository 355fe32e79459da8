"""Architecture adapters: where each supported family keeps its tensors, and how to read them
in one convention (nn.Linear's `(out, in)`), so the rest of zkfp never branches on names.

Dispatch is on `config.json` (its `model_type`, then its `architectures`), never on a
folder or repository name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from zkfp.errors import UnsupportedArchitecture

if TYPE_CHECKING:
    import torch

    from zkfp.checkpoint import Checkpoint


@dataclass(frozen=True)
class Family:
    """One architecture family's layout. Key templates use `{i}` for the layer index."""

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    causal: bool
    mlp: Literal["gated", "plain"]
    norm: Literal["rms", "layer"]
    pre_norm: bool  # False for BERT: its LayerNorms come after the residual add
    base_prefixes: tuple[str, ...]  # tried in order; a checkpoint may omit the base prefix
    embed: str
    final_norm: str | None
    layer: str
    attn_norm: str
    mlp_norm: str
    q: str | None
    k: str | None
    v: str | None
    qkv: str | None  # fused projection (GPT-2, GPT-NeoX)
    o: str
    gate: str | None
    up: str
    down: str
    conv1d: bool = False  # GPT-2 stores (in, out)
    tied_by_default: bool = False  # transformers' default for `tie_word_embeddings` in this family's config


LLAMA = Family(
    name="llama", model_types=("llama", "mistral", "qwen2"),
    architectures=("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"),
    causal=True, mlp="gated", norm="rms", pre_norm=True, base_prefixes=("model.",),
    embed="embed_tokens.weight", final_norm="norm", layer="layers.{i}.",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", qkv=None, o="self_attn.o_proj",
    gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj",
)
GPT2 = Family(
    name="gpt2", model_types=("gpt2",), architectures=("GPT2LMHeadModel",),
    causal=True, mlp="plain", norm="layer", pre_norm=True, base_prefixes=("transformer.", ""),
    embed="wte.weight", final_norm="ln_f", layer="h.{i}.", attn_norm="ln_1", mlp_norm="ln_2",
    q=None, k=None, v=None, qkv="attn.c_attn", o="attn.c_proj",
    gate=None, up="mlp.c_fc", down="mlp.c_proj", conv1d=True, tied_by_default=True,
)
GPT_NEOX = Family(
    name="gpt_neox", model_types=("gpt_neox",), architectures=("GPTNeoXForCausalLM",),
    causal=True, mlp="plain", norm="layer", pre_norm=True, base_prefixes=("gpt_neox.",),
    embed="embed_in.weight", final_norm="final_layer_norm", layer="layers.{i}.",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    q=None, k=None, v=None, qkv="attention.query_key_value", o="attention.dense",
    gate=None, up="mlp.dense_h_to_4h", down="mlp.dense_4h_to_h",
)
BERT = Family(
    name="bert", model_types=("bert", "roberta"), architectures=("BertModel", "BertForMaskedLM", "RobertaModel"),
    causal=False, mlp="plain", norm="layer", pre_norm=False, base_prefixes=("bert.", "roberta.", ""),
    embed="embeddings.word_embeddings.weight", final_norm=None, layer="encoder.layer.{i}.",
    attn_norm="attention.output.LayerNorm", mlp_norm="output.LayerNorm",
    q="attention.self.query", k="attention.self.key", v="attention.self.value", qkv=None,
    o="attention.output.dense", gate=None, up="intermediate.dense", down="output.dense", tied_by_default=True,
)
FAMILIES = (LLAMA, GPT2, GPT_NEOX, BERT)
CAUSAL_FAMILIES = tuple(f for f in FAMILIES if f.causal)


@dataclass(frozen=True)
class Dims:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


@dataclass(frozen=True)
class Architecture:
    family: Family
    dims: Dims
    activation: Literal["silu", "gelu", "gelu_tanh"]
    norm_eps: float
    tied_embeddings: bool = False  # the output head is the input embedding (config `tie_word_embeddings`)


_ACTIVATIONS = {
    "silu": "silu", "swish": "silu",
    "gelu": "gelu", "gelu_python": "gelu",
    "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
}


def supported_list(families: tuple[Family, ...] = FAMILIES) -> str:
    return ", ".join(a for f in families for a in f.architectures)


def detect(config: dict, families: tuple[Family, ...] = FAMILIES) -> Architecture:
    """The architecture described by a `config.json` dict, or a clear error listing what is supported."""
    model_type = config.get("model_type")
    family = next((f for f in families if model_type in f.model_types), None)
    if family is None:
        declared = config.get("architectures") or []
        family = next((f for f in families if any(a in f.architectures for a in declared)), None)
    if family is None:
        described = model_type or ", ".join(config.get("architectures") or []) or "unknown"
        raise UnsupportedArchitecture(
            f"unsupported architecture {described!r}; supported: {supported_list(families)}"
        )
    dims = _dims(family, config)
    act_name = config.get("hidden_act") or config.get("activation_function") or "gelu_new"
    if act_name not in _ACTIVATIONS:
        raise UnsupportedArchitecture(f"unsupported MLP activation {act_name!r} in {family.name} config")
    activation = _ACTIVATIONS[act_name]
    if family.mlp == "gated" and activation != "silu":
        raise UnsupportedArchitecture(f"gated MLP with activation {act_name!r} is not supported (only SiLU)")
    eps = config.get("rms_norm_eps") or config.get("layer_norm_eps") or config.get("layer_norm_epsilon") or 1e-5
    tied = bool(config.get("tie_word_embeddings", family.tied_by_default))
    return Architecture(family=family, dims=dims, activation=activation, norm_eps=float(eps), tied_embeddings=tied)


def _dims(family: Family, c: dict) -> Dims:
    if family is GPT2:
        hidden, layers, heads = c["n_embd"], c["n_layer"], c["n_head"]
        intermediate = c.get("n_inner") or 4 * hidden
        kv_heads = heads
    else:
        hidden, layers, heads = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]
        intermediate = c["intermediate_size"]
        kv_heads = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or hidden // heads
    return Dims(hidden, intermediate, layers, heads, kv_heads, head_dim, c["vocab_size"])


# ---------------------------------------------------------------------------------------------
# Reading tensors in one convention


@dataclass
class Norm:
    gain: "torch.Tensor"
    bias: "torch.Tensor | None"


@dataclass
class Linear:
    weight: "torch.Tensor"  # (out, in)
    bias: "torch.Tensor | None"


@dataclass
class LayerWeights:
    """One block's weights, nn.Linear convention, q/k/v split out of fused projections."""

    attn_norm: Norm
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    mlp_norm: Norm
    gate: Linear | None
    up: Linear
    down: Linear


class ModelReader:
    """Reads an architecture's tensors by role from a lazily opened checkpoint."""

    def __init__(self, ckpt: "Checkpoint", families: tuple[Family, ...] = FAMILIES):
        self.ckpt = ckpt
        self.arch = detect(ckpt.config, families)
        self.family = self.arch.family
        self.prefix = self._find_prefix()

    def _find_prefix(self) -> str:
        for prefix in self.family.base_prefixes:
            if prefix + self.family.embed in self.ckpt:
                return prefix
        from zkfp.errors import CheckpointError

        raise CheckpointError(
            f"{self.family.name} checkpoint has no embedding tensor "
            f"({' or '.join(p + self.family.embed for p in self.family.base_prefixes)})"
        )

    def key(self, name: str, layer: int | None = None) -> str:
        """Full tensor name of a role template, e.g. key('mlp.up_proj.weight', 3)."""
        if layer is None:
            return self.prefix + name
        return self.prefix + self.family.layer.format(i=layer) + name

    def embedding_key(self) -> str:
        return self.key(self.family.embed)

    def _tensor(self, name: str, layer: int | None, dtype) -> "torch.Tensor | None":
        key = self.key(name, layer)
        return self.ckpt.get(key, dtype) if key in self.ckpt else None

    def _required(self, name: str, layer: int | None, dtype) -> "torch.Tensor":
        return self.ckpt.get(self.key(name, layer), dtype)

    def linear(self, role: str, layer: int, dtype=None) -> Linear:
        weight = self._required(role + ".weight", layer, dtype)
        if self.family.conv1d:
            weight = weight.t().contiguous()
        return Linear(weight, self._tensor(role + ".bias", layer, dtype))

    def norm(self, role: str, layer: int | None, dtype=None) -> Norm:
        return Norm(self._required(role + ".weight", layer, dtype), self._tensor(role + ".bias", layer, dtype))

    def final_norm(self, dtype=None) -> Norm | None:
        return None if self.family.final_norm is None else self.norm(self.family.final_norm, None, dtype)

    def layer(self, i: int, dtype=None) -> LayerWeights:
        f = self.family
        if f.qkv is None:
            q, k, v = (self.linear(r, i, dtype) for r in (f.q, f.k, f.v))
        else:
            q, k, v = self._split_qkv(self.linear(f.qkv, i, dtype))
        return LayerWeights(
            attn_norm=self.norm(f.attn_norm, i, dtype), q=q, k=k, v=v, o=self.linear(f.o, i, dtype),
            mlp_norm=self.norm(f.mlp_norm, i, dtype),
            gate=None if f.gate is None else self.linear(f.gate, i, dtype),
            up=self.linear(f.up, i, dtype), down=self.linear(f.down, i, dtype),
        )

    def _split_qkv(self, fused: Linear) -> tuple[Linear, Linear, Linear]:
        d = self.arch.dims
        w, b = fused.weight, fused.bias
        if self.family is GPT_NEOX:
            # NeoX interleaves per head: rows are [head][q|k|v][head_dim].
            w = w.view(d.heads, 3, d.head_dim, -1)
            parts = [w[:, j].reshape(d.heads * d.head_dim, -1) for j in range(3)]
            bparts = [None] * 3 if b is None else [b.view(d.heads, 3, d.head_dim)[:, j].reshape(-1) for j in range(3)]
        else:
            parts = list(w.split(d.hidden, dim=0))
            bparts = [None] * 3 if b is None else list(b.split(d.hidden))
        return tuple(Linear(p.contiguous(), bp) for p, bp in zip(parts, bparts))  # type: ignore[return-value]
