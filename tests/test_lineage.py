"""Structural derivations (fingerprint.lineage), the wide-lexicon corpus and the zoo tokenizers,
on untrained tiny models (hidden 32, 3 blocks, vocabulary 300): fast, no training."""

from __future__ import annotations

import pytest
import torch

from fingerprint import lineage

V = 300
FAMILIES = {"llama": dict(kv_heads=2), "gpt2": {}}


def _model(family: str, seed: int = 0):
    from zkfp.zoo.tiny import build

    torch.set_num_threads(1)
    return build(family, seed=seed, hidden=32, layers=3, heads=4, vocab=V, **FAMILIES[family])


def _logits(model, vocab: int = V) -> torch.Tensor:
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


def _roundtrip(model, tmp_path):
    """Save and reload; the reloaded model must compute the same logits."""
    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path).float().eval()
    assert torch.allclose(_logits(back), _logits(model), atol=1e-6)
    return back


def _n_blocks(model) -> int:
    return len(model.transformer.h if model.config.model_type == "gpt2" else model.model.layers)


def _layer_idx(model) -> list[int]:
    if model.config.model_type == "gpt2":
        return [b.attn.layer_idx for b in model.transformer.h]
    return [b.self_attn.layer_idx for b in model.model.layers]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_extend_vocab(family, tmp_path):
    m = _model(family)
    child = lineage.extend_vocab(m, 20, seed=1)
    assert child.config.vocab_size == V + 20 and m.config.vocab_size == V  # input left unchanged
    E = child.get_input_embeddings().weight
    assert E.shape[0] == V + 20 and child.get_output_embeddings().weight.shape[0] == V + 20
    assert torch.equal(E[:V], m.get_input_embeddings().weight)
    assert (E[V:] - m.get_input_embeddings().weight.mean(0)).abs().max() < 0.5 * E[:V].std()
    if family == "gpt2":  # the head stays tied to the embedding
        assert child.lm_head.weight.data_ptr() == child.transformer.wte.weight.data_ptr()
    # Old ids, old columns: unchanged (only the new columns are added to the softmax).
    assert torch.allclose(_logits(child)[..., :V], _logits(m), atol=1e-5)
    back = _roundtrip(child, tmp_path)
    assert back.config.vocab_size == V + 20


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("index", [-1, 1])
def test_drop_layer(family, index, tmp_path):
    m = _model(family)
    child = lineage.drop_layer(m, index)
    assert _n_blocks(child) == 2 and child.config.num_hidden_layers == 2 and _n_blocks(m) == 3
    assert _layer_idx(child) == [0, 1]
    back = _roundtrip(child, tmp_path)
    assert back.config.num_hidden_layers == 2
    out = back.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)  # KV cache by layer_idx
    assert out.shape == (1, 7)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_insert_layer_copy(family, tmp_path):
    m = _model(family)
    child = lineage.insert_layer_copy(m, 1)
    assert _n_blocks(child) == 4 and child.config.num_hidden_layers == 4 and _layer_idx(child) == [0, 1, 2, 3]
    blocks = child.transformer.h if family == "gpt2" else child.model.layers
    a, b = blocks[1].state_dict(), blocks[2].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The duplicated block runs twice: the function changes (this is not function-preserving) ...
    assert (_logits(child) - _logits(m)).abs().max() > 1e-3
    _roundtrip(child, tmp_path)
    # ... unless the copy's output projections are zeroed (LLaMA Pro): then the logits are kept.
    ident = lineage.insert_layer_copy(m, 1, identity=True)
    assert torch.allclose(_logits(ident), _logits(m), atol=1e-5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_width_prune(family, tmp_path):
    m = _model(family)
    size = m.config.intermediate_size if family == "llama" else 4 * m.config.n_embd
    child = lineage.width_prune(m, 0.25)
    keep = size - round(0.25 * size)
    for blk in child.transformer.h if family == "gpt2" else child.model.layers:
        if family == "gpt2":
            assert blk.mlp.c_fc.weight.shape[1] == keep and blk.mlp.c_proj.weight.shape[0] == keep
        else:
            assert blk.mlp.up_proj.weight.shape[0] == keep and blk.mlp.down_proj.weight.shape[1] == keep
    back = _roundtrip(child, tmp_path)
    assert (back.config.intermediate_size if family == "llama" else back.config.n_inner) == keep
    assert torch.allclose(_logits(lineage.width_prune(m, 0.0)), _logits(m), atol=1e-6)  # nothing removed


def test_gqa_to_mha_keeps_logits(tmp_path):
    m = _model("llama")
    child = lineage.gqa_to_mha(m)
    assert child.config.num_key_value_heads == child.config.num_attention_heads == 4
    assert child.model.layers[0].self_attn.k_proj.weight.shape == (32, 32)
    assert torch.allclose(_logits(child), _logits(m), atol=1e-5)
    back = _roundtrip(child, tmp_path)
    assert back.config.num_key_value_heads == 4
    with pytest.raises(ValueError):
        lineage.gqa_to_mha(_model("gpt2"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_merge(family):
    a, b = _model(family, 0), _model(family, 1)
    mid = lineage.merge(a, b, 0.5)
    pa, pb, pm = a.state_dict(), b.state_dict(), mid.state_dict()
    assert all(torch.allclose(pm[k], (pa[k] + pb[k]) / 2) for k in pa if pa[k].is_floating_point())
    assert torch.allclose(_logits(lineage.merge(a, b, 1.0)), _logits(a))
    with pytest.raises(ValueError):
        lineage.merge(a, lineage.drop_layer(b, -1))


def test_wide_corpus_and_tokenizers():
    from zkfp.zoo.corpus import generate, generate_wide
    from zkfp.zoo.tokenizer import encode_lines, extend_bpe, train_bpe

    assert generate("forest", 5, seed=0) == generate("forest", 5, seed=0)
    text = generate_wide(3000, seed=0)
    assert text == generate_wide(3000, seed=0) and text != generate_wide(3000, seed=1)
    assert generate_wide(50, seed=0, domain=1) != generate_wide(50, seed=0)
    assert len(set(text.split())) > 1500  # a wide lexicon, not a hundred words
    lines = text.splitlines()
    tok = train_bpe(lines, vocab_size=600)
    assert tok.get_vocab_size() == 600 and tok.token_to_id("<|endoftext|>") == 0
    foreign = generate_wide(2000, seed=1, phonology="foreign").splitlines()
    ext = extend_bpe(tok, foreign, 40)
    assert ext.get_vocab_size() == 640
    assert all(ext.encode(ln).ids == tok.encode(ln).ids for ln in lines[:200])  # base text unchanged
    assert any(i >= 600 for ln in foreign[:50] for i in ext.encode(ln).ids)
    plain = encode_lines(tok, lines[:300])
    noisy = encode_lines(tok, lines[:300], unmerge_p=0.3, seed=0)
    assert len(noisy) > len(plain) and tok.decode(noisy.tolist()) == tok.decode(plain.tolist())
    assert (noisy == encode_lines(tok, lines[:300], unmerge_p=0.3, seed=0)).all()
