"""Token ids are names, and a derivative may rename them: a renumbered vocabulary (ids permuted,
tokenizer and embedding rows moved with them) computes the same text, and a published fingerprint
still finds itself in it, by the token strings FP.json records beside the ids."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fingerprint import spec
from fingerprint.compare import compare
from fingerprint.disguise import renumber_vocabulary
from fingerprint.extract import extract
from fingerprint.fpjson import from_json, load, save
from fingerprint.identify import suspect_fingerprint
from zkfp.errors import FingerprintError

REPO = Path(__file__).resolve().parent.parent
TEXT = "the old river spoke to the stones of the forest at night"


def zkfp(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zkfp.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


@pytest.fixture(scope="module")
def renumbered(llama, tmp_path_factory):
    """The tiny Llama with its vocabulary renumbered, and the permutation (new id of each old id)."""
    out = tmp_path_factory.mktemp("renumbered") / "model"
    return out, renumber_vocabulary(llama, out, seed=3)


def _tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))


def test_a_renumbered_vocabulary_computes_the_same_text(llama, renumbered):
    from transformers import AutoModelForCausalLM

    out, perm = renumbered
    ids, new_ids = _tokenizer(llama)(TEXT)["input_ids"], _tokenizer(out)(TEXT)["input_ids"]
    assert new_ids == [perm[i] for i in ids] and new_ids != ids
    with torch.no_grad():
        before = AutoModelForCausalLM.from_pretrained(llama)(torch.tensor([ids])).logits
        after = AutoModelForCausalLM.from_pretrained(out)(torch.tensor([new_ids])).logits
    torch.testing.assert_close(after[..., perm], before)  # each token's logit moved with its id
    assert _tokenizer(out).decode(new_ids) == _tokenizer(llama).decode(ids)


def test_a_fingerprint_records_the_token_strings_of_its_ids(llama):
    fp = extract(llama)
    tok = _tokenizer(llama)
    assert fp.tokens == tok.convert_ids_to_tokens(fp.token_ids)
    assert from_json(json.loads(json.dumps(fp.to_json())), "round trip").tokens == fp.tokens


def test_compare_reads_a_renumbered_suspect_at_its_own_ids_for_the_published_tokens(llama, renumbered, tmp_path):
    out, perm = renumbered
    published = extract(llama)
    save(published, tmp_path / "published.json")
    r = zkfp("compare", tmp_path / "published.json", out, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["verdict"] == "same-lineage" and result["similarity"] == pytest.approx(100.0, abs=1e-3)
    assert result["renumbered"] is True
    text = zkfp("compare", tmp_path / "published.json", out)
    assert "at its own ids for them" in text.stdout
    suspect = suspect_fingerprint(out, published.token_ids, published.tokens)
    assert suspect.token_ids == [perm[i] for i in published.token_ids] and suspect.tokens == published.tokens


def test_without_the_token_strings_a_renumbered_vocabulary_evades_the_fingerprint(llama, renumbered):
    """Why FP.json records them: read at the published ids, the renumbered copy looks like a stranger."""
    out, _ = renumbered
    published = extract(llama)
    published.tokens = None  # an FP.json written before token strings were recorded
    result = compare(published, extract(out, token_ids=published.token_ids))
    assert result["verdict"] == "unrelated" and not result["renumbered"]


def test_a_renumbered_twin_scores_as_the_twin_itself(llama, tiny_models, tmp_path):
    """Reading a suspect at its own ids for the published tokens finds what the twin has, nothing more."""
    twin = tiny_models("llama", seed=1, steps=150, layers=3)
    renumber_vocabulary(twin, tmp_path / "twin", seed=3)
    published = extract(llama)
    plain = compare(published, extract(twin, token_ids=published.token_ids))
    renumbered = compare(published, suspect_fingerprint(tmp_path / "twin", published.token_ids, published.tokens))
    assert renumbered["similarity"] == pytest.approx(plain["similarity"], abs=1e-4) and renumbered["renumbered"]
    assert renumbered["verdict"] == plain["verdict"] != "same-lineage"


def test_weights_are_aligned_on_the_rows_of_the_same_tokens(llama, renumbered):
    from fingerprint.weights import compare_weights

    result = compare_weights(llama, renumbered[0])
    assert result["verdict"] == "same-lineage" and result["similarity"] == pytest.approx(100.0, abs=1e-3)
    assert result["alignment_residual"] < 1e-5


def test_identify_finds_the_published_model_behind_a_renumbered_vocabulary(llama, renumbered, tiny_models, tmp_path):
    from fingerprint.identify import identify
    from fingerprint.registry import Registry

    with Registry(tmp_path / "r.sqlite") as reg:
        reg.add(extract(llama), "base", source="test")
        reg.add(extract(tiny_models("llama", seed=1, steps=150, layers=3)), "stranger", source="test")
        ident = identify(renumbered[0], reg)
    best, other = ident.matches
    assert (best.name, best.verdict) == ("base", "same-lineage") and best.similarity == pytest.approx(100.0, abs=1e-3)
    assert "read at its own ids" in best.note
    assert other.name == "stranger" and other.verdict != "same-lineage" and other.similarity < 50


def test_a_model_without_a_tokenizer_is_read_by_id(llama, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(llama, bare, ignore=shutil.ignore_patterns("tokenizer*"))
    published = extract(llama)
    suspect = suspect_fingerprint(bare, published.token_ids, published.tokens)
    assert suspect.tokens is None and suspect.token_ids == published.token_ids
    assert compare(published, suspect)["similarity"] == pytest.approx(100.0, abs=1e-3)


@pytest.mark.parametrize("tokens, why", [(["a"] * 3, "wrong length"), ([1] * spec.K_TOKENS, "not strings"),
                                         ("abc", "not a list")])
def test_fp_json_with_malformed_token_strings_is_refused(llama, tmp_path, tokens, why):
    data = extract(llama).to_json()
    data["tokens"] = tokens
    (tmp_path / "fp.json").write_text(json.dumps(data))
    with pytest.raises(FingerprintError, match="tokens must be the 16 token strings of token_ids"):
        load(tmp_path / "fp.json")


def test_compare_warns_when_the_suspect_has_other_tokens_at_the_published_ids(llama, tmp_path):
    """A suspect whose tokenizer lacks the published tokens is read by id: the rows are then other
    tokens', and the command says so."""
    from zkfp.zoo.tokenizer import train_bpe

    other = tmp_path / "other"
    shutil.copytree(llama, other)
    letters = np.random.default_rng(0).choice(list("qxzjkvwy"), size=(3000, 6))
    train_bpe(["".join(w) for w in letters], vocab_size=512).save(str(other / "tokenizer.json"))  # other merges
    save(extract(llama), tmp_path / "published.json")
    result = json.loads(zkfp("compare", tmp_path / "published.json", other, "--json").stdout)
    assert result["same_tokens"] is False and result["renumbered"] is False
    assert "rows of different tokens were compared" in zkfp("compare", tmp_path / "published.json", other).stdout
