"""`zkfp protect / generate / audit` through zkfp.cli.main, including every bad input."""

from __future__ import annotations

import json
import shutil


from zkfp.cli import main


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_refused(capsys, out_dir, *argv, match):
    rc, _, err = _run(capsys, *argv)
    assert rc != 0
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and match in lines[0], err
    assert not out_dir.exists()
    assert not any(p.name.startswith(f".{out_dir.name}.partial") for p in out_dir.parent.iterdir())


def test_protect_generate_audit(tiny_models, tmp_path, capsys):
    ckpt = tiny_models("llama")
    rel = tmp_path / "rel"
    rc, out, _ = _run(capsys, "protect", ckpt, "--out", rel, "--terms", 6)
    assert rc == 0 and "N=6" in out
    assert json.loads((rel / "manifest.json").read_text())["n_terms"] == 6

    rc, out, _ = _run(capsys, "generate", rel, "--prompt", "the quiet fox", "--max-new-tokens", 12)
    assert rc == 0 and out.strip()

    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    tok = AutoTokenizer.from_pretrained(ckpt)
    ids = tok("count: two three")["input_ids"]
    rc, out, _ = _run(capsys, "generate", rel, "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", 10)
    original = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = original.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert rc == 0 and out.strip() == tok.decode(ref[0, len(ids):].tolist()).strip()

    rc, out, _ = _run(capsys, "audit", rel, "--original", ckpt)
    assert rc == 0 and "recovered within 0.001 relative error of the original: 100.00%" in out

    # existing output: refused without --force, replaced with it
    _assert_refused_existing = _run(capsys, "protect", ckpt, "--out", rel)
    assert _assert_refused_existing[0] != 0 and "--force" in _assert_refused_existing[2]
    rc, _, _ = _run(capsys, "protect", ckpt, "--out", rel, "--terms", 4, "--force")
    assert rc == 0 and json.loads((rel / "manifest.json").read_text())["n_terms"] == 4


def test_generate_stats_reports_guard_fallbacks_per_block(tiny_models, tmp_path, capsys):
    ckpt = tiny_models("llama")
    rel = tmp_path / "rel"
    assert _run(capsys, "protect", ckpt, "--out", rel, "--terms", 6)[0] == 0
    rc, plain, _ = _run(capsys, "generate", rel, "--prompt", "the quiet fox", "--max-new-tokens", 8)
    rc, out, _ = _run(capsys, "generate", rel, "--prompt", "the quiet fox", "--max-new-tokens", 8, "--stats")
    assert rc == 0 and out.startswith(plain)  # the same text, then the tally
    lines = out[len(plain):].strip().splitlines()
    assert "the 6-term series is not used there" in lines[0]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[2:]}
    layers = json.loads((rel / "manifest.json").read_text())["layers"]
    assert list(rows) == [str(i) for i in range(len(layers))] + ["total"]
    evaluations = [int(rows[str(i)][0]) for i in range(len(layers))]
    fell_back = [int(rows[str(i)][1]) for i in range(len(layers))]
    assert all(e > 0 for e in evaluations) and all(0 <= f <= e for f, e in zip(fell_back, evaluations))
    assert rows["total"][:2] == [str(sum(evaluations)), str(sum(fell_back))]
    assert rows["total"][2] == f"{100 * sum(fell_back) / sum(evaluations):.3f}%"


def test_calibration_files(tiny_models, tmp_path, capsys):
    ckpt = tiny_models("llama")
    text = tmp_path / "calib.txt"
    text.write_text("the quiet fox watches the old owl by the river.\n" * 20)
    rc, _, err = _run(capsys, "protect", ckpt, "--out", tmp_path / "a", "--calibration", text)
    assert rc == 0, err
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(list(range(1, 300))))
    rc, _, err = _run(capsys, "protect", ckpt, "--out", tmp_path / "b", "--calibration", ids)
    assert rc == 0, err
    plain = tmp_path / "ids.txt"
    plain.write_text(" ".join(str(i % 500) for i in range(400)))
    rc, _, err = _run(capsys, "protect", ckpt, "--out", tmp_path / "c", "--calibration", plain)
    assert rc == 0, err
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["calibration"]["tokens"] == 400 and "ids.txt" in m["calibration"]["source"]


def test_bad_model_dirs(tiny_models, tmp_path, capsys):
    out = tmp_path / "out"
    _assert_refused(capsys, out, "protect", tmp_path / "nope", "--out", out, match="does not exist")
    (tmp_path / "empty").mkdir()
    _assert_refused(capsys, out, "protect", tmp_path / "empty", "--out", out, match="empty")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04 would-be pickle")
    _assert_refused(capsys, out, "protect", pickled, "--out", out, match="never unpickles")

    cut = tmp_path / "cut"
    shutil.copytree(tiny_models("llama"), cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 3])
    _assert_refused(capsys, out, "protect", cut, "--out", out, match="corrupted or truncated")

    garbled = tmp_path / "garbled"
    shutil.copytree(tiny_models("llama"), garbled)
    data = bytearray((garbled / "model.safetensors").read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")  # header length far beyond the file
    (garbled / "model.safetensors").write_bytes(bytes(data))
    _assert_refused(capsys, out, "protect", garbled, "--out", out, match="corrupted or truncated")


def test_bad_terms_and_calibration(tiny_models, tmp_path, capsys):
    ckpt, out = tiny_models("llama"), tmp_path / "out"
    _assert_refused(capsys, out, "protect", ckpt, "--out", out, "--terms", 0, match="≥ 1")
    _assert_refused(capsys, out, "protect", ckpt, "--out", out, "--terms", 100, match="too large (max 32)")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    _assert_refused(capsys, out, "protect", ckpt, "--out", out, "--calibration", empty, match="calibration file is empty")
    bad_ids = tmp_path / "bad.json"
    bad_ids.write_text("[1, 2, 99999]")
    _assert_refused(capsys, out, "protect", ckpt, "--out", out, "--calibration", bad_ids, match="outside the vocabulary")


def test_unsupported_architectures(tiny_models, tmp_path, capsys):
    from zkfp.zoo.tiny import tiny_config

    out = tmp_path / "out"
    bert = tmp_path / "bert"  # a BERT config over real safetensors: refused on the config, weights unread
    shutil.copytree(tiny_models("llama"), bert)
    tiny_config("bert").save_pretrained(bert)
    _assert_refused(capsys, out, "protect", bert, "--out", out,
                    match="unsupported architecture 'bert'; supported: LlamaForCausalLM")
    t5 = tmp_path / "t5"
    shutil.copytree(tiny_models("llama"), t5)
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}))
    _assert_refused(capsys, out, "protect", t5, "--out", out, match="unsupported architecture 't5'")


def test_generate_and_audit_refuse_bad_releases(tiny_models, tmp_path, capsys):
    ckpt, rel = tiny_models("llama"), tmp_path / "rel"
    assert _run(capsys, "protect", ckpt, "--out", rel)[0] == 0
    data = bytearray((rel / "base.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (rel / "base.safetensors").write_bytes(bytes(data))
    for cmd in (["generate", rel, "--prompt", "the"], ["audit", rel]):
        rc, out, err = _run(capsys, *cmd)
        assert rc != 0 and "sha256 mismatch for base.safetensors" in err and not out
    rc, _, err = _run(capsys, "generate", tmp_path / "missing", "--prompt", "x")
    assert rc != 0 and "does not exist" in err
