"""The shared foundation: checkpoint reading, architecture detection, the zoo, the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from zkfp.architectures import ModelReader, detect
from zkfp.checkpoint import Checkpoint
from zkfp.errors import CheckpointError, UnsupportedArchitecture, ZkfpError
from zkfp.files import atomic_output_dir


def test_missing_and_empty_model_dirs_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty"):
        Checkpoint(tmp_path / "empty")


def test_pickle_only_checkpoint_is_refused_without_unpickling(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="never unpickles.*safetensors"):
        Checkpoint(tmp_path)


def test_truncated_safetensors_is_refused(tiny_models, tmp_path):
    import shutil

    src = tiny_models("llama")
    dst = tmp_path / "cut"
    shutil.copytree(src, dst)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        Checkpoint(dst)


def test_sharded_bf16_checkpoint_reads_like_the_single_file(tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    from zkfp.zoo.tiny import save

    model = AutoModelForCausalLM.from_pretrained(tiny_models("llama"))
    sharded = save(model, tmp_path / "sharded", dtype=torch.bfloat16, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    ckpt = Checkpoint(sharded)
    assert len(ckpt.files()) > 1
    reference = Checkpoint(tiny_models("llama"))
    name = "model.layers.1.mlp.down_proj.weight"
    assert ckpt.dtype(name) == "BF16"
    torch.testing.assert_close(ckpt.get(name, torch.float32), reference.get(name).bfloat16().float())


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "gpt_neox", "bert"])
def test_every_family_reads_in_linear_convention(tiny_models, family):
    reader = ModelReader(Checkpoint(tiny_models(family, steps=5)))
    d = reader.arch.dims
    layer = reader.layer(d.layers - 1, torch.float32)
    assert layer.q.weight.shape == (d.heads * d.head_dim, d.hidden)
    assert layer.k.weight.shape == (d.kv_heads * d.head_dim, d.hidden)
    assert layer.up.weight.shape == (d.intermediate, d.hidden)
    assert layer.down.weight.shape == (d.hidden, d.intermediate)


def test_detection_is_by_config_and_lists_what_is_supported():
    with pytest.raises(UnsupportedArchitecture, match="supported: .*LlamaForCausalLM.*GPT2LMHeadModel"):
        detect({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]})
    arch = detect({"model_type": "weird", "architectures": ["MistralForCausalLM"], "hidden_size": 8,
                   "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10,
                   "hidden_act": "silu"})
    assert arch.family.name == "llama"


def test_atomic_output_dir_leaves_nothing_on_failure_and_keeps_existing(tmp_path):
    out = tmp_path / "release"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(ZkfpError, match="--force"):
        with atomic_output_dir(out):
            pass
    assert (out / "keep.txt").read_text() == "old"


def test_cli_help_is_instant_and_imports_no_torch():
    code = "import sys; from zkfp.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
