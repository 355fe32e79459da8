"""Proof regression tests on the embedded tiny model: prove once per session, verify, and refuse
every tampering with a reason (each binding check has its own failing case)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def other_bundle(other_release, tmp_path_factory):
    from prover import prove

    return Path(prove(other_release, tmp_path_factory.mktemp("b2") / "bundle", dev_srs=True, progress=False))


@pytest.fixture
def copy(bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    return out


def _verify(b, r=None, **kw):
    from verifier import verify_bundle

    kw.setdefault("allow_dev_srs", True)
    return verify_bundle(b, r, **kw)


def _edit_manifest(bundle: Path, edit) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def _rehash_release(rel: Path, bundle: Path) -> None:
    """What an attacker does after editing release files: every hash rewritten to match."""
    from zkfp.files import sha256_file

    man = json.loads((rel / "manifest.json").read_text())
    for name in man["files"]:
        man["files"][name]["sha256"] = sha256_file(rel / name)
    (rel / "manifest.json").write_text(json.dumps(man))
    _edit_manifest(bundle, lambda m: m["release"].update(files={p.name: sha256_file(p) for p in rel.iterdir()}))


def _refused(res, status="invalid", words=()):
    assert not res.ok and res.status == status, res
    assert res.reasons and all(w in res.reasons[0] for w in words), res.reasons


def test_valid_bundle_without_the_release(bundle):
    """Reads no tensor: the proof, the derived key, the listed commitments, v and the image."""
    res = _verify(bundle)
    assert res.ok and res.status == "valid", res.reasons
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["float_cosine"] >= 0.99
    assert res.v == m["v"] and len(res.v) == 64 * len(m["circuit"]["shape"]["layers"])  # one v per layer
    assert res.commitment_digest == m["commitment_digest"] and m["commitment_digest"] in res.statement
    assert "release_hashes" not in res.checks and res.checks["srs"]["kind"] == "dev"


def test_valid_bundle_against_its_release(bundle, release):
    res = _verify(bundle, release)
    assert res.ok, res.reasons
    assert res.checks["commitments_match"] is True and res.checks["consistency"] == "ok"


def test_commit_prints_the_bundles_digest(bundle, release):
    from circuits.srs import dev_path
    from verifier.commit import commit_release

    m = json.loads((bundle / "manifest.json").read_text())
    srs = next(p for p in dev_path(0).parent.glob("dev-k*.srs"))
    assert commit_release(release, srs) == m["commitment_digest"]
    cli = subprocess.run([sys.executable, "-m", "zkfp.cli", "commit", str(release), "--srs", str(srs)],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 0 and cli.stdout.strip() == m["commitment_digest"], cli.stderr


def test_bundle_declaring_another_spec_is_refused(copy):
    def k8(m):
        m["circuit"]["shape"]["k"] = 8
    _edit_manifest(copy, k8)
    _refused(_verify(copy), words=("k (selected tokens) = 8", "spec"))


def test_bundle_declaring_more_layers_than_it_proved_is_refused(copy):
    def four(m):
        m["circuit"]["shape"]["layers"] = m["circuit"]["shape"]["layers"] * 2
    _edit_manifest(copy, four)
    _refused(_verify(copy), words=("circuit key is not the key of its shape",))


def test_commitments_swapped_between_inputs(copy):
    """Two listed commitments exchanged (digest recomputed): the proof does not hold them."""
    from verifier.bundle import commitment_digest, read_bundle

    def swap(m):
        c = m["proofs"][0]["inputs"]
        c[1]["points"], c[2]["points"] = c[2]["points"], c[1]["points"]
    _edit_manifest(copy, swap)
    _edit_manifest(copy, lambda m: m.update(commitment_digest=commitment_digest(read_bundle(copy).proofs[0].inputs)))
    _refused(_verify(copy), words=("does not hold the commitments",))


def test_commitments_swapped_between_two_bundles(copy, other_bundle):
    """Model B's tensor commitments (and B's digest) listed for model A's proof: A's proof does not hold them."""
    theirs = json.loads((other_bundle / "manifest.json").read_text())

    def swap(m):
        m["proofs"][0]["inputs"] = theirs["proofs"][0]["inputs"]
        m["commitment_digest"] = theirs["commitment_digest"]
    _edit_manifest(copy, swap)
    _refused(_verify(copy), words=("proof terms does not hold the commitments",))


def test_encoder_proof_from_another_bundle(copy, other_bundle):
    """Each proof valid on its own, but the encoder's came from model B: the link refuses it."""
    from zkfp.files import sha256_file

    theirs = json.loads((other_bundle / "manifest.json").read_text())
    shutil.copyfile(other_bundle / "encoder.proof.json", copy / "encoder.proof.json")
    shutil.copyfile(other_bundle / "fingerprint.png", copy / "fingerprint.png")

    def take(m):
        ours = m["proofs"][1]["sha256"]["encoder.settings.json"]  # B's shape differs; the encoder circuit does not
        m["proofs"][1] = theirs["proofs"][1]
        m["proofs"][1]["sha256"]["encoder.settings.json"] = ours
        m["v"] = theirs["v"]
        m["png"]["sha256"] = sha256_file(copy / "fingerprint.png")
    _edit_manifest(copy, take)
    _refused(_verify(copy), words=("read terms under different commitments",))


def test_link_between_the_proofs_altered(copy):
    """The encoder's terms commitment replaced by another point: its proof does not hold it, and
    the link check alone (as for an encoder proof taken from another bundle) refuses it too."""
    from verifier.bundle import read_bundle
    from verifier.verify import _check_links, _Invalid, _plan, _spec_shape

    def relink(m):
        m["proofs"][1]["inputs"][0]["points"] = m["proofs"][0]["inputs"][0]["points"]
    _edit_manifest(copy, relink)
    _refused(_verify(copy), words=("proof encoder does not hold",))
    b = read_bundle(copy)
    with pytest.raises(_Invalid, match="read terms under different commitments"):
        _check_links(b, _plan(b, _spec_shape(b)))


def test_proofs_reordered_or_missing(copy):
    _edit_manifest(copy, lambda m: m.update(proofs=m["proofs"][::-1]))
    _refused(_verify(copy), words=("proofs",))
    _edit_manifest(copy, lambda m: m.update(proofs=m["proofs"][:1]))
    _refused(_verify(copy), words=("proofs",))


def test_terms_are_not_public(bundle):
    """Only y (m values per layer) and one check per term are public; the terms circuit publishes nothing."""
    terms = json.loads((bundle / "terms.proof.json").read_text())
    encoder = json.loads((bundle / "encoder.proof.json").read_text())
    assert sum(len(x) for x in terms["instances"]) == 0
    assert sum(len(x) for x in encoder["instances"]) == 2 * 64 + 6  # two layers: y_0, y_1 and six checks


def test_another_models_digest_in_the_manifest(copy):
    _edit_manifest(copy, lambda m: m.update(commitment_digest="ab" * 32))
    _refused(_verify(copy), words=("commitment digest",))


def test_dev_srs_passed_by_path_is_still_a_dev_srs(bundle):
    from circuits.srs import dev_path

    srs = next(p for p in dev_path(0).parent.glob("dev-k*.srs"))
    _refused(_verify(bundle, srs=srs, allow_dev_srs=False), words=("dev SRS",))


def test_another_srs_is_refused(bundle, tmp_path):
    import ezkl

    other = tmp_path / "other.srs"
    m = json.loads((bundle / "manifest.json").read_text())
    ezkl.gen_srs(str(other), m["circuit"]["logrows"])
    _refused(_verify(bundle, srs=other), words=("another SRS",))


def test_release_mixing_theta0_of_another_model(release, copy, tmp_path):
    """Θ₀ of one expanded neuron replaced (as if from another model), every hash updated: the
    commitments still match (the circuit reads orders 1–2), the consistency check refuses."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    rel = tmp_path / "release"
    shutil.copytree(release, rel)
    man = json.loads((rel / "manifest.json").read_text())
    last = len(man["layers"]) - 1
    name = f"layer-{last:05d}.safetensors"
    tensors = load_file(rel / name)
    key = f"taylor.layers.{last}.coeffs"
    coeffs = tensors[key].copy()
    coeffs[0] = np.random.default_rng(0).normal(scale=float(np.abs(coeffs[0]).mean()) + 1e-3,
                                                size=coeffs[0].shape).astype(coeffs.dtype)
    tensors[key] = coeffs
    save_file(tensors, rel / name)
    _rehash_release(rel, copy)
    _refused(_verify(copy, rel), words=(key,))


def test_proven_v_matches_fingerprint_extract(bundle, release):
    import numpy as np

    from fingerprint.extract import extract

    v = np.array(json.loads((bundle / "manifest.json").read_text())["v"])
    ref = np.array(extract(release).v)
    assert float(v @ ref / np.linalg.norm(v) / np.linalg.norm(ref)) >= 0.99


def test_golden(bundle):
    from circuits.golden import compare

    diffs = compare(bundle)
    assert not diffs, "\n".join(diffs)


def test_dev_srs_refused_without_opt_in(bundle, release):
    _refused(_verify(bundle, release, allow_dev_srs=False), words=("dev SRS",))


@pytest.mark.parametrize("part", ["terms", "encoder"])
def test_flipped_byte_in_proof(copy, part):
    p = json.loads((copy / f"{part}.proof.json").read_text())
    h = p["proof"]
    i = len(h) // 2
    if isinstance(h, list):
        h[i] ^= 0x01
    else:
        p["proof"] = h[:i] + ("0" if h[i] != "0" else "1") + h[i + 1:]
    (copy / f"{part}.proof.json").write_text(json.dumps(p))
    _refused(_verify(copy), words=("proof",))


def test_truncated_proof_bytes(copy):
    """ezkl panics on a short proof; the verifier must still answer with a reason."""
    p = json.loads((copy / "terms.proof.json").read_text())
    p["proof"] = p["proof"][:10]
    (copy / "terms.proof.json").write_text(json.dumps(p))
    _refused(_verify(copy), words=("malformed or truncated proof",))


def test_other_models_release(bundle, other_release):
    _refused(_verify(bundle, other_release), words=("release",))


def test_one_weight_changed_even_with_fixed_hashes(copy, release, tmp_path):
    """The attacker changes one weight and rewrites every hash; the commitment check refuses."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    rel = tmp_path / "release"
    shutil.copytree(release, rel)
    name = "layer-00001.safetensors"
    tensors = load_file(rel / name)
    key = "model.layers.1.self_attn.q_proj.weight"
    tensors[key] = tensors[key].copy()
    tensors[key][0, 0] += np.float32(0.25)
    save_file(tensors, rel / name)
    _rehash_release(rel, copy)
    _refused(_verify(copy, rel), words=("does not commit",))


def test_png_swapped(copy):
    from fingerprint import render

    (copy / "fingerprint.png").write_bytes(render.png_bytes([0.5] * 64))
    _refused(_verify(copy), words=("fingerprint.png",))


def test_png_of_another_v_with_its_hash_recorded(copy):
    import numpy as np

    from fingerprint import render
    from zkfp.files import sha256_file

    (copy / "fingerprint.png").write_bytes(render.png_bytes(list(np.random.default_rng(5).normal(size=64))))
    _edit_manifest(copy, lambda m: m["png"].update(sha256=sha256_file(copy / "fingerprint.png")))
    _refused(_verify(copy), words=("not the rendering of v",))


def test_v_edited_in_manifest(copy):
    _edit_manifest(copy, lambda m: m["v"].__setitem__(0, m["v"][0] + 0.01))
    _refused(_verify(copy), words=("v in the manifest",))


def test_key_swapped(copy, tmp_path):
    """A valid key of another circuit (same SRS) in place of the bundle's key."""
    import ezkl
    import torch

    from circuits.srs import dev_srs

    m = json.loads((copy / "manifest.json").read_text())

    class Other(torch.nn.Module):
        def forward(self, x):
            return x * 2

    torch.onnx.export(Other(), (torch.ones(4),), str(tmp_path / "o.onnx"), opset_version=17, dynamo=False)
    ra = ezkl.PyRunArgs()
    ra.logrows = m["circuit"]["logrows"]
    ezkl.gen_settings(str(tmp_path / "o.onnx"), str(tmp_path / "s.json"), py_run_args=ra)
    ezkl.compile_circuit(str(tmp_path / "o.onnx"), str(tmp_path / "o.c"), str(tmp_path / "s.json"))
    srs = dev_srs(m["circuit"]["logrows"])
    ezkl.setup(str(tmp_path / "o.c"), str(tmp_path / "vk.key"), str(tmp_path / "pk.key"), srs_path=str(srs.path))
    shutil.copyfile(tmp_path / "vk.key", copy / "terms.vk.key")
    _refused(_verify(copy), words=("terms.vk.key is not the verification key of this circuit",))


def test_settings_edited(copy):
    s = json.loads((copy / "terms.settings.json").read_text())
    s["run_args"]["input_scale"] = 9
    (copy / "terms.settings.json").write_text(json.dumps(s))
    _refused(_verify(copy), words=("settings",))


def test_settings_edited_subtly(copy):
    """An edit that would leave v unchanged (z-scores hide a scale change) is still refused."""
    s = json.loads((copy / "encoder.settings.json").read_text())
    s["model_output_scales"] = [s["model_output_scales"][0] + 1]
    (copy / "encoder.settings.json").write_text(json.dumps(s))
    _refused(_verify(copy), words=("settings",))


def test_truncated_manifest(copy):
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text[: len(text) // 2])
    _refused(_verify(copy), status="unusable", words=("JSON",))


def test_malformed_token_strings_in_the_manifest(copy):
    _edit_manifest(copy, lambda m: m["model"].update(tokens=["only one"]))
    _refused(_verify(copy), status="unusable", words=("model.tokens",))


def test_the_manifest_says_whether_the_release_ties_its_head_and_a_release_checks_it(copy, release):
    from verifier.bundle import read_bundle

    assert read_bundle(copy).tied_embeddings is False  # the embedded Llama has an output head of its own
    _edit_manifest(copy, lambda m: m["model"].update(tied_embeddings=True))
    assert _verify(copy).ok  # not proven: without the release nothing can say otherwise
    _refused(_verify(copy, release), words=("output head is tied to the embedding", "its config says its own"))
    _edit_manifest(copy, lambda m: m["model"].update(tied_embeddings="no"))
    _refused(_verify(copy), status="unusable", words=("model.tied_embeddings",))


def test_malformed_proof_json(copy):
    (copy / "encoder.proof.json").write_text('{"instances": 3}')
    _refused(_verify(copy), status="unusable")


def test_missing_file(copy):
    (copy / "encoder.vk.key").unlink()
    _refused(_verify(copy), status="unusable", words=("missing",))


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_prove_needs_an_srs_choice(release, tmp_path):
    from prover import prove
    from zkfp.errors import ZkfpError

    with pytest.raises(ZkfpError, match="--dev-srs"):
        prove(release, tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()


def test_prove_never_overwrites_without_force(bundle, release):
    from prover import prove
    from zkfp.errors import ZkfpError

    before = _files(bundle)
    with pytest.raises(ZkfpError, match="output exists"):
        prove(release, bundle, dev_srs=True, progress=False)
    assert _files(bundle) == before


def test_failed_prove_with_force_leaves_the_old_bundle_whole(copy, release):
    """An SRS too small for the circuit fails the run; the bundle being replaced is untouched."""
    import ezkl

    from prover import prove
    from zkfp.errors import ZkfpError

    small = copy.parent / "small.srs"
    ezkl.gen_srs(str(small), 10)
    before = _files(copy)
    with pytest.raises(ZkfpError, match="logrows 10"):
        prove(release, copy, srs=small, force=True, progress=False)
    assert _files(copy) == before


def test_cli_exit_codes(bundle, release, tmp_path):
    base = [sys.executable, "-m", "zkfp.cli", "verify", str(bundle), "--release", str(release)]
    env = dict(os.environ)
    ok = subprocess.run(base + ["--allow-dev-srs", "--json"], capture_output=True, text=True, env=env, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    alone = subprocess.run(base[:5] + ["--allow-dev-srs"], capture_output=True, text=True, env=env, cwd=REPO)
    assert alone.returncode == 0 and alone.stdout.startswith("valid: v is the fingerprint"), alone.stdout + alone.stderr
    bad = subprocess.run(base, capture_output=True, text=True, env=env, cwd=REPO)
    assert bad.returncode == 1 and "dev SRS" in bad.stderr
    gone = subprocess.run(base[:4] + [str(tmp_path / "nope"), "--release", str(release)], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert gone.returncode == 2


def test_verification_runs_with_torch_and_transformers_unimportable(bundle, release):
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "from verifier import verify_bundle\n"
            f"r = verify_bundle({str(bundle)!r}, {str(release)!r}, allow_dev_srs=True)\n"
            "print(r.status, r.reasons); sys.exit(0 if r.ok else 1)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bundle_loads_as_a_fingerprint_for_compare(bundle, release):
    from fingerprint.compare import compare
    from fingerprint.extract import extract
    from fingerprint.fpjson import load

    proven = load(bundle)
    assert proven.v == json.loads((bundle / "manifest.json").read_text())["v"]
    assert proven.tokens is not None and proven.tokens == extract(release).tokens  # the release's token strings
    result = compare(proven, extract(release, token_ids=proven.token_ids))
    assert result["basis"] == "v" and result["verdict"] == "same-lineage"


def test_demo_runs_the_whole_flow(demo):
    """protect → fingerprint → prove → verify → compare on the embedded model (the `demo` fixture
    runs it once: its release and bundle are the session's)."""
    for name in ("fingerprints.png", "bundle/manifest.json", "bundle/fingerprint.png", "release/manifest.json"):
        assert (demo / name).is_file(), name


def test_bf16_release_proves_and_verifies(other_release, other_bundle):
    """Most real checkpoints ship bf16: `other_release` is protected from one, proved and verified,
    without and with its release."""
    assert "BF16" in json.loads((other_release / "manifest.json").read_text())["dtypes"]["source_weights"]
    assert _verify(other_bundle).ok
    res = _verify(other_bundle, other_release)
    assert res.ok, res.reasons


def test_a_huge_private_factor_cannot_satisfy_the_encoder(release, bundle, tmp_path):
    """The prover's one free input, u_t (not range-checked, like every committed input): honest
    values satisfy every constraint with every check 1; a field element far outside the fixed-point
    range for one term breaks a constraint or that term's check."""
    import ezkl
    import numpy as np

    from circuits import pipeline
    from circuits.finish import CHECK_TOL, ints_to_felts, inverse_sigmas, v_from_public
    from circuits.graph import reference_terms
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.plan import make_plan
    from fingerprint import spec
    from verifier.commit import quantise

    rel = Release(release)
    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    terms = reference_terms(shape, release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k)))
    felts = ints_to_felts([int(round(x * 2.0 ** 60)) for x in terms])
    plan = make_plan(shape, pipeline.logrows_for(shape))
    encoder = pipeline.build(plan.chunks[-1].part, plan.logrows)
    u = quantise(np.sqrt(inverse_sigmas(felts, shape)), shape.enc_input_scale)
    scale = encoder.settings_json()["model_output_scales"][0]

    def attempt(u_felts) -> bool:
        (tmp_path / "in.json").write_text(json.dumps({"input_data": [felts, u_felts]}))
        try:
            w = ezkl.gen_witness(str(tmp_path / "in.json"), str(encoder.compiled), str(tmp_path / "w.json"))
            _, checks = v_from_public([ezkl.felt_to_float(f, scale) for f in w["outputs"][0]], shape)
            ezkl.mock(str(tmp_path / "w.json"), str(encoder.compiled))
        except BaseException:  # noqa: BLE001 - ezkl panics are BaseExceptions
            return False
        return bool(np.all(np.abs(checks - 1) <= CHECK_TOL))

    assert attempt(u), "the honest factor satisfies the encoder"
    huge = ints_to_felts([2 ** 200])[0]
    assert not attempt([huge] + u[1:])


@pytest.fixture(scope="module")
def layernorm(tiny_models, tmp_path_factory):
    """A GPT-2 release (LayerNorm, fused qkv, plain GELU MLP with a folded bias) and its bundle.
    One layer, so that both its circuits fit 2^16 rows: it proves in ~150 s, a 2-layer one at 2^17
    in ~400 s (the encoder of two layers needs 84k rows); what changes with depth is the same in
    every family and is proved on the embedded model. Last in the file: its keys would push the
    embedded shape's out of the session's bounded key cache."""
    import taylor
    from prover import prove

    root = tmp_path_factory.mktemp("layernorm")
    rel = taylor.protect(tiny_models("gpt2", seed=0, steps=5, layers=1), root / "rel")
    return Path(rel), Path(prove(rel, root / "bundle", dev_srs=True, progress=False))


def test_a_layernorm_family_proves_and_verifies(layernorm):
    """The GPT-2 release is proved, and verified without and against the release; v is the float
    fingerprint's. One proof per MLP kind: GPT-NeoX's circuit is this one with another
    activation, and its float reference is checked against fingerprint.extract in test_circuits."""
    import numpy as np

    from fingerprint.extract import extract

    rel, out = layernorm
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["family"] == "gpt2" and m["circuit"]["shape"]["mlp"] == "plain"
    assert _verify(out).ok
    res = _verify(out, rel)
    assert res.ok and res.checks["consistency"] == "ok", res.reasons
    v, ref = np.array(res.v), np.array(extract(rel).v)
    assert float(v @ ref / np.linalg.norm(v) / np.linalg.norm(ref)) >= 0.99


def test_verifier_derives_the_key_itself(layernorm, tmp_path, monkeypatch):
    """On a machine that never proved anything (empty cache), the verifier rebuilds the circuit
    from the release's shape and derives the key the bundle must carry."""
    from circuits.srs import dev_path

    _, bundle = layernorm
    m = json.loads((bundle / "manifest.json").read_text())
    srs = tmp_path / "srs.bin"
    shutil.copyfile(dev_path(m["circuit"]["logrows"]), srs)
    monkeypatch.setenv("ZKFP_CACHE", str(tmp_path / "fresh-cache"))
    said: list[str] = []
    res = _verify(bundle, srs=srs, progress=said.append)
    assert res.ok, res.reasons
    assert res.checks["key"] == "derived" and res.checks["srs"]["kind"] == "unknown"
    assert any("deriving the verification key" in line for line in said), said
    entries = list((tmp_path / "fresh-cache" / "keys").iterdir())
    assert entries and all(not (e / "pk.key").exists() for e in entries), "a verifier keeps no proving key"
