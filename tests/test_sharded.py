"""Protecting sharded checkpoints at any size: calibration streams block by block, the release is
written all-or-nothing, its shards are hashed and named when missing or swapped, and a
calibration file in a foreign encoding is decoded or refused, saying why.

(The 7B-shaped measurement is benchmarks/taylor_7b_conversion.py; these use tiny models.)
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from taylor.calibration import calibrate, calibration_tokens, token_batches
from taylor.conversion import protect
from taylor.release import ReleaseReader
from taylor.runtime import load_release
from zkfp.cli import main
from zkfp.errors import ReleaseError, ZkfpError

BF16_SHARDED = {"steps": 5, "dtype": torch.bfloat16, "max_shard_size": "100KB"}


def _whole_model_statistics(model_dir):
    """The reference: min/max of each block's MLP pre-activation with the whole model loaded by
    transformers and run over the same calibration batches."""
    from transformers import AutoModelForCausalLM

    from zkfp.architectures import CAUSAL_FAMILIES, detect
    from zkfp.checkpoint import Checkpoint

    arch = detect(Checkpoint(model_dir).config, CAUSAL_FAMILIES)
    fam = arch.family
    ids, _ = calibration_tokens(model_dir, None, arch.dims.vocab)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    seen: dict[int, list] = {i: [] for i in range(arch.dims.layers)}
    for i in range(arch.dims.layers):
        module = model.get_submodule(fam.base_prefixes[0] + fam.layer.format(i=i) + (fam.gate or fam.up))
        module.register_forward_hook(lambda _m, _in, out, i=i: seen[i].append(out.reshape(-1, out.shape[-1])))
    with torch.no_grad():
        for batch in token_batches(ids, 128):
            model(input_ids=batch)
    return ([torch.cat(seen[i]).amin(0).numpy() for i in seen], [torch.cat(seen[i]).amax(0).numpy() for i in seen])


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_streamed_calibration_equals_the_whole_model_forward(tiny_models, family):
    ckpt = tiny_models(family, steps=5)
    calib = calibrate(ckpt)
    lo, hi = _whole_model_statistics(ckpt)
    assert len(calib.minimum) == len(lo)
    for got_lo, got_hi, want_lo, want_hi in zip(calib.minimum, calib.maximum, lo, hi):
        assert np.array_equal(got_lo, want_lo) and np.array_equal(got_hi, want_hi)


def test_calibration_loads_no_whole_model(tiny_models, monkeypatch):
    import transformers

    def refuse(*_a, **_k):
        raise AssertionError("calibration loaded the whole model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    calibrate(tiny_models("llama", steps=5))


@pytest.fixture(scope="module")
def sharded_release(tiny_models, tmp_path_factory):
    """(bf16 checkpoint sharded with an index, its release)."""
    ckpt = tiny_models("llama", **BF16_SHARDED)
    assert (ckpt / "model.safetensors.index.json").is_file() and len(list(ckpt.glob("*.safetensors"))) > 2
    return ckpt, protect(ckpt, tmp_path_factory.mktemp("sharded") / "rel", n_terms=6)


def test_sharded_bf16_release_keeps_bf16_and_records_every_shard(sharded_release):
    _, rel = sharded_release
    m = json.loads((rel / "manifest.json").read_text())
    shards = sorted(p.name for p in rel.glob("*.safetensors"))
    assert shards == sorted(["base.safetensors"] + [f"layer-{i:05d}.safetensors" for i in range(len(m["layers"]))])
    assert {n: f for n, f in m["files"].items() if n.endswith(".safetensors")}.keys() == set(shards)
    clear = {info["dtype"] for name, info in m["tensors"].items()
             if not name.startswith("taylor.") or name.rsplit(".", 1)[1].endswith("weight")}
    assert clear == {"BF16"}
    assert {m["tensors"][f"taylor.layers.0.{n}"]["dtype"] for n in ("coeffs", "anchor", "guard_radius")} == {"F32"}
    reader = ReleaseReader(rel)
    assert reader.get("model.embed_tokens.weight").dtype == torch.bfloat16


def test_zkfp_generate_runs_a_sharded_release_like_the_original(sharded_release, capsys):
    from transformers import AutoModelForCausalLM

    ckpt, rel = sharded_release
    ids = [5, 17, 3, 40]
    assert main(["generate", str(rel), "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    original = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    protected = load_release(rel)
    with torch.no_grad():
        want = original.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=0)
        got = protected.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(want, got)
    from transformers import AutoTokenizer

    assert out.strip() == AutoTokenizer.from_pretrained(rel).decode(want[0, len(ids):].tolist()).strip()


# -- an interrupted conversion leaves no release ---------------------------------------------


def test_an_interrupt_mid_conversion_leaves_nothing_and_keeps_the_old_release(sharded_release, tmp_path,
                                                                             monkeypatch):
    import taylor.conversion

    ckpt, _ = sharded_release
    out = tmp_path / "rel"
    protect(ckpt, out, n_terms=4)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = taylor.conversion.save_streamed, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # the first block's shard is already written
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(taylor.conversion, "save_streamed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        protect(ckpt, out, n_terms=6, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_killed_conversion_leaves_no_release(sharded_release, tmp_path):
    """SIGKILL allows no clean-up: the work folder stays behind, hidden, and `out` never exists."""
    ckpt, _ = sharded_release
    out = tmp_path / "rel"
    child = (
        "import os, signal, sys, taylor.conversion as c\n"
        "real, calls = c.save_streamed, []\n"
        "def killed(*a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a, **k)\n"
        "c.save_streamed = killed\n"
        "c.protect(sys.argv[1], sys.argv[2], n_terms=4)\n"
    )
    r = subprocess.run([sys.executable, "-c", child, str(ckpt), str(out)], capture_output=True)
    assert r.returncode == -signal.SIGKILL
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".rel.partial-")
    assert (leftovers[0] / "layer-00000.safetensors").is_file()  # it was killed mid-way
    protect(ckpt, out, n_terms=4)  # and a new run is not disturbed by it
    assert ReleaseReader(out).n_terms == 4


# -- missing and swapped shards --------------------------------------------------------------


@pytest.fixture(scope="module")
def two_releases(tiny_models, tmp_path_factory):
    """Releases of two same-shaped, differently seeded sharded checkpoints."""
    root = tmp_path_factory.mktemp("two")
    return [protect(tiny_models("llama", seed=s, **BF16_SHARDED), root / f"rel{s}", n_terms=6) for s in (0, 1)]


def _refused(capsys, *argv):
    assert main([str(a) for a in argv]) != 0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and not out, err
    return lines[0]


def test_a_missing_shard_is_named(two_releases, tmp_path, capsys):
    from circuits.inputs import Release

    rel = shutil.copytree(two_releases[0], tmp_path / "rel")
    (rel / "layer-00001.safetensors").unlink()
    with pytest.raises(ReleaseError, match="release file missing: layer-00001.safetensors"):
        load_release(rel)
    assert "release file missing: layer-00001.safetensors" in _refused(capsys, "generate", rel, "--prompt-ids", "1,2")
    circuit_view = Release(rel)
    with pytest.raises(ReleaseError, match="file missing from .*: layer-00001.safetensors"):
        circuit_view.mlp(1, "coeffs")


@pytest.mark.parametrize("shard", ["layer-00001.safetensors", "base.safetensors"])
def test_a_shard_swapped_in_from_another_release_is_named(two_releases, tmp_path, capsys, shard):
    ours, theirs = two_releases
    rel = shutil.copytree(ours, tmp_path / "rel")
    shutil.copyfile(theirs / shard, rel / shard)
    ReleaseReader(rel, verify=False)  # same names, shapes and dtypes: only the recorded sha256 tells
    with pytest.raises(ReleaseError, match=f"sha256 mismatch for {shard}: .*another release"):
        load_release(rel)
    assert f"sha256 mismatch for {shard}" in _refused(capsys, "generate", rel, "--prompt-ids", "1,2")


# -- calibration files in other encodings ---------------------------------------------------

TEXT = "the quiet fox watches the old owl by the river, café crème.\n" * 20


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_calibration_file_with_a_byte_order_mark_is_decoded(tiny_models, tmp_path, encoding):
    ckpt = tiny_models("llama", steps=5)
    utf8, other = tmp_path / "utf8.txt", tmp_path / "other.txt"
    utf8.write_bytes(TEXT.encode("utf-8"))
    other.write_bytes(TEXT.encode(encoding))  # Python writes the BOM for these codecs
    want, _ = calibration_tokens(ckpt, utf8, 512)
    got, source = calibration_tokens(ckpt, other, 512)
    assert torch.equal(got, want)
    assert source == f"text from other.txt ({encoding.removesuffix('-sig')})"


def test_latin1_and_bomless_utf16_calibration_files_are_refused_saying_why(tiny_models, tmp_path, capsys):
    ckpt, out = tiny_models("llama", steps=5), tmp_path / "out"
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(TEXT.encode("latin-1"))
    offset = TEXT.encode("latin-1").index(b"\xe9")
    line = _refused(capsys, "protect", ckpt, "--out", out, "--calibration", latin)
    assert f"not valid UTF-8 text (byte 0xe9 at offset {offset})" in line and "save it as UTF-8" in line
    bare = tmp_path / "utf16le.txt"
    bare.write_bytes(TEXT.encode("utf-16-le"))
    line = _refused(capsys, "protect", ckpt, "--out", out, "--calibration", bare)
    assert "NUL bytes: UTF-16 or UTF-32 text without a byte-order mark?" in line
    assert not out.exists()
    with pytest.raises(ZkfpError, match="not valid UTF-16 text"):
        broken = tmp_path / "broken16.txt"
        broken.write_bytes("ab".encode("utf-16") + b"\x00\xd8")  # a lone high surrogate
        calibration_tokens(ckpt, broken, 512)
