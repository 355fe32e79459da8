"""A model proved in chunks (circuits.plan) on Ray: the run is interrupted, resumed and verified,
and every way of tampering with the chunks or their links is refused with a reason.

The embedded model fits one circuit of 2^17 rows; a row budget per chunk of 60,000 cuts it into
attention, expanded-neuron and exact-neuron chunks per layer plus, since the encoder of both
layers needs more rows than that, one encoder per layer, each summing its layer's partials, all
proved at 2^16 rows (the least that holds the budget)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
CHUNK_ROWS = 60_000


def _prove_cli(release: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zkfp.cli", "prove", str(release), "--out", str(out),
                             "--dev-srs", "--chunk-rows", str(CHUNK_ROWS), "--workers", "2", "--no-progress"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="session")
def interrupted(release, tmp_path_factory):
    """A `zkfp prove` killed (its whole process group, Ray workers included) once its first chunk
    proof is written: what it leaves behind."""
    out = tmp_path_factory.mktemp("chunked") / "bundle"
    work = out.with_name(out.name + ".partial")
    proc = _prove_cli(release, out)
    deadline = time.monotonic() + 1500
    while not list(work.glob("*.result.json")):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no chunk was proved in time"
        time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in work.glob("*.result.json")}
    return out, finished


@pytest.fixture(scope="session")
def chunked(interrupted, release):
    """The interrupted run, run again to the end."""
    from prover import prove

    out, _ = interrupted
    timings: dict = {}
    prove(release, out, dev_srs=True, progress=False, chunk_rows=CHUNK_ROWS, workers=2, timings=timings)
    return out, timings


@pytest.fixture
def copy(chunked, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(chunked[0], out)
    return out


def _verify(b, r=None):
    from verifier import verify_bundle

    return verify_bundle(b, r, allow_dev_srs=True)


def _edit(bundle: Path, edit) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    edit(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def _refused(res, *words):
    assert not res.ok and res.status == "invalid", res
    assert all(w in res.reasons[0] for w in words), res.reasons


def test_an_interrupted_run_leaves_no_bundle_and_the_rerun_resumes(interrupted, chunked):
    out, finished = interrupted
    assert finished, "the interrupted run had proved a chunk"
    bundle, timings = chunked
    assert bundle == out and (bundle / "manifest.json").is_file()
    assert not out.with_name(out.name + ".partial").exists(), "the work folder is removed once the bundle is written"
    assert timings["chunks"] == 8 and timings["circuits"] == 5
    assert json.loads((bundle / "manifest.json").read_text())["circuit"]["logrows"] == 16
    assert timings["resumed"] >= len(finished), "the chunks proved before the interruption were not proved again"


def test_chunked_bundle_verifies_without_and_with_the_release(chunked, release):
    from verifier.bundle import read_bundle

    bundle, _ = chunked
    res = _verify(bundle)
    assert res.ok, res.reasons
    b = read_bundle(bundle)
    names = [p.name for p in b.proofs]
    assert names[-2:] == ["encoder.l0-1", "encoder.l1-2"] and len(names) == 8 and res.checks["proofs"] == 8
    assert {n.split(".")[1] for n in names[:-2]} == {"attn", "expanded", "exact"}
    assert "in 8 linked proofs" in res.statement
    res = _verify(bundle, release)
    assert res.ok and res.checks["commitments_match"] is True, res.reasons


def test_chunked_v_is_the_unchunked_v(chunked, bundle):
    """Partial terms summed in the encoder give the fingerprint the single circuit gives."""
    import numpy as np

    a = np.array(json.loads((chunked[0] / "manifest.json").read_text())["v"])
    b = np.array(json.loads((bundle / "manifest.json").read_text())["v"])
    assert np.max(np.abs(a - b)) < 1e-3


def test_commit_with_the_bundles_budget_gives_its_digest(chunked, release):
    from circuits.srs import dev_path
    from verifier.commit import commit_release

    m = json.loads((chunked[0] / "manifest.json").read_text())
    srs = next(p for p in dev_path(0).parent.glob("dev-k*.srs"))
    assert commit_release(release, srs, m["circuit"]["chunk_rows"]) == m["commitment_digest"]


def test_a_bundle_declaring_another_logrows_or_an_impossible_budget_is_refused(copy, release):
    """The logrows follows from the budget: a budget that needs 2^17 rows with the bundle's 2^16 is
    refused, and so are one beyond the model's own circuit and one too small for any chunk;
    `zkfp commit` refuses a budget beyond the model's circuit too."""
    _edit(copy, lambda m: m["circuit"].update(chunk_rows=100_000))
    _refused(_verify(copy), "logrows 16 is not its plan's (17)")
    _edit(copy, lambda m: m["circuit"].update(chunk_rows=200_000))
    _refused(_verify(copy), "row budget per chunk does not fit", "between 1 and 130,048", "not 200,000")
    _edit(copy, lambda m: m["circuit"].update(chunk_rows=5_000))
    _refused(_verify(copy), "row budget per chunk cannot hold this model", "needs more than 5,000 rows")
    r = subprocess.run([sys.executable, "-m", "zkfp.cli", "commit", str(release), "--srs", str(copy / "x.srs"),
                        "--chunk-rows", "0"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "--chunk-rows: a row budget per chunk must be between 1 and" in r.stderr, r.stderr


def test_chunks_of_one_circuit_share_one_key_file(chunked):
    m = json.loads((chunked[0] / "manifest.json").read_text())
    keys = {p["vk"] for p in m["proofs"]}
    assert len(keys) == 5 and len(list(chunked[0].glob("*.vk.key"))) == 5  # attn, expanded, exact, 2 encoders


def test_chunks_reordered(copy):
    _edit(copy, lambda m: m["proofs"].insert(0, m["proofs"].pop(1)))
    _refused(_verify(copy), "not in the plan's order")


def test_chunk_missing(copy):
    _edit(copy, lambda m: m["proofs"].pop(2))
    _refused(_verify(copy), "is missing")


def test_chunk_proof_files_swapped_between_two_chunks_of_one_circuit(copy):
    """Two attention chunks' proofs exchanged (hashes rewritten): neither holds its listed commitments."""
    m = json.loads((copy / "manifest.json").read_text())
    a, b = [p for p in m["proofs"] if ".attn." in p["name"]][:2]
    pa, pb = (copy / a["proof"]).read_bytes(), (copy / b["proof"]).read_bytes()
    (copy / a["proof"]).write_bytes(pb)
    (copy / b["proof"]).write_bytes(pa)
    a["sha256"][a["proof"]], b["sha256"][b["proof"]] = b["sha256"][b["proof"]], a["sha256"][a["proof"]]
    (copy / "manifest.json").write_text(json.dumps(m))
    _refused(_verify(copy), "does not hold the commitments")


def test_link_commitment_altered_on_both_sides(copy):
    """A chunk's committed output and the encoder's input replaced by one other point: the link
    is consistent, but the proofs do not hold it."""
    m = json.loads((copy / "manifest.json").read_text())
    chunk = m["proofs"][0]
    other = m["proofs"][1]["outputs"][0]["points"]
    chunk["outputs"][0]["points"] = other
    for c in (c for p in m["proofs"] for c in p["inputs"]):
        if c["name"] == chunk["name"]:
            c["points"] = other
    (copy / "manifest.json").write_text(json.dumps(m))
    _refused(_verify(copy), "does not hold the commitments")


def test_link_commitment_altered_on_one_side(copy):
    """The encoder's record of one partial's commitment replaced: its proof does not hold it, and
    the link check alone (as for an encoder proof taken from elsewhere) refuses it too."""
    from verifier.bundle import read_bundle
    from verifier.verify import _check_links, _Invalid, _plan, _spec_shape

    m = json.loads((copy / "manifest.json").read_text())
    m["proofs"][-1]["inputs"][0]["points"] = m["proofs"][-1]["inputs"][1]["points"]
    (copy / "manifest.json").write_text(json.dumps(m))
    _refused(_verify(copy), "proof encoder.l1-2 does not hold the commitments")
    b = read_bundle(copy)
    with pytest.raises(_Invalid, match=f"read {m['proofs'][-1]['inputs'][0]['name']} under different commitments"):
        _check_links(b, _plan(b, _spec_shape(b)))


def _another_release(release: Path, out: Path) -> Path:
    """A release of the same shape with other token rows (its manifest's hashes rewritten)."""
    from safetensors.numpy import load_file, save_file

    from zkfp.files import sha256_file

    shutil.copytree(release, out)
    tensors = load_file(out / "base.safetensors")
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"] * 1.5
    save_file(tensors, out / "base.safetensors")
    manifest = json.loads((out / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name]["sha256"] = sha256_file(out / name)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_chunk_proved_from_another_release(copy, release, tmp_path):
    """One chunk proved, honestly, from another release of the same shape and put in the bundle,
    first under the bundle's listed commitments, then with its own: the token rows it read are
    not the other chunks' (the link)."""
    from circuits import pipeline
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.plan import chunk_inputs, make_plan
    from circuits.srs import dev_srs
    from fingerprint import spec
    from prover import tasks
    from verifier.bundle import read_bundle

    rel = Release(_another_release(release, tmp_path / "other-release"))
    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    mine = read_bundle(copy)
    assert shape.key() == mine.circuit_key
    plan = make_plan(shape, mine.logrows, CHUNK_ROWS)
    chunk = plan.chunks[0]
    tensors = dict(zip([n for n, _ in shape.input_specs()],
                       release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))))
    work = tmp_path / "other-chunk"
    work.mkdir()
    (work / "in.json").write_text(pipeline.input_json(chunk_inputs(chunk, shape, tensors)))
    tasks.prove_chunk(chunk.name, chunk.part.to_json(), plan.logrows, str(dev_srs(plan.logrows).path),
                      str(work / "in.json"), str(work))
    result = tasks.read_result(work, chunk.name)
    m = json.loads((copy / "manifest.json").read_text())
    entry = m["proofs"][0]
    shutil.copyfile(tasks.proof_path(work, chunk.name), copy / entry["proof"])
    from zkfp.files import sha256_file

    entry["sha256"][entry["proof"]] = sha256_file(copy / entry["proof"])
    (copy / "manifest.json").write_text(json.dumps(m))
    _refused(_verify(copy), "does not hold the commitments")
    for c, pts in zip(entry["inputs"], result["inputs"]):
        c["points"] = pts
    for c, pts in zip(entry["outputs"], result["outputs"]):
        c["points"] = pts
    (copy / "manifest.json").write_text(json.dumps(m))
    _refused(_verify(copy), "under different commitments")


def test_a_machine_too_small_for_one_chunk_is_refused_before_any_work(release, tmp_path, monkeypatch):
    from circuits import pipeline
    from circuits.inputs import Release, shape_of
    from fingerprint import spec
    from prover import prove
    from zkfp.errors import ZkfpError

    pipeline.logrows_for(shape_of(Release(release), spec.K_TOKENS, spec.M_DIM))  # 17, cached
    monkeypatch.setattr(pipeline, "max_logrows", lambda memory_bytes=None: 16)
    with pytest.raises(ZkfpError, match=r"2\^17 rows, about 3.9 GB each to prove .* up to 2\^16 rows: prove it in "
                                        r"smaller chunks \(zkfp prove --chunk-rows 64,512\)"):
        prove(release, tmp_path / "b", dev_srs=True, progress=False)
    assert not list(tmp_path.iterdir()), "nothing written"
    # the advice holds: with that budget the plan fits (refused only later, here, for its workers)
    with pytest.raises(ZkfpError, match="workers need .* this machine's memory holds"):
        prove(release, tmp_path / "b", dev_srs=True, progress=False, chunk_rows=64_512, workers=1000)
    assert not list(tmp_path.iterdir()), "nothing written"


def test_a_model_whose_smallest_chunk_does_not_fit_is_refused_before_any_work(release, tmp_path):
    from prover import prove
    from zkfp.errors import ZkfpError

    with pytest.raises(ZkfpError, match="cannot be cut into chunks of 2\\^16 rows: one .* needs more than 5,000 rows"):
        prove(release, tmp_path / "b", dev_srs=True, progress=False, chunk_rows=5_000)
    assert not list(tmp_path.iterdir()), "nothing written"


def test_a_row_budget_beyond_the_models_circuit_is_refused_before_any_work(release, tmp_path):
    from prover import prove
    from zkfp.errors import ZkfpError

    for rows in (0, 200_000):
        with pytest.raises(ZkfpError, match=f"--chunk-rows: a row budget per chunk must be between 1 and 130,048 "
                                            f"for this model .* not {rows:,}"):
            prove(release, tmp_path / "b", dev_srs=True, progress=False, chunk_rows=rows)
    assert not list(tmp_path.iterdir()), "nothing written"


def test_more_workers_than_memory_holds_are_refused(release, tmp_path):
    from prover import prove
    from zkfp.errors import ZkfpError

    with pytest.raises(ZkfpError, match="workers need .* this machine's memory holds"):
        prove(release, tmp_path / "b", dev_srs=True, progress=False, workers=1000)
