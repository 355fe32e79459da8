"""Check a proof bundle: without the weights, and optionally against a release.

numpy, safetensors, onnx, Pillow and ezkl only: no torch, no transformers.

`ezkl.verify` alone checks neither the instance values nor which commitments a proof holds;
every binding below is ours, one function each:

  without the release (reads no tensor)
    spec       the circuit shape is the pinned spec's for the declared model dimensions (k, L, m,
               encoder, scales are the verifier's, never the bundle's); token ids follow the rule
    srs        the SRS file is the one the proof was made under; its kind is what the verifier can
               establish (this machine's dev SRS, or unknown), never what the bundle claims
    key        the verifier rebuilds the circuit and derives its key (cached per shape and SRS);
               the bundle's settings and key must be exactly those
    proofs     each proof holds exactly the commitments the manifest lists (swapping them in leaves
               the proof unchanged) and verifies under the derived key
    links      inputs shared between proofs carry equal commitments; the commitment digest is
               the digest of the listed commitments
    v, image   v is what the proof's public terms give; the PNG is the rendering of v
  against a release (additionally)
    release    the release's files are the recorded ones; its shape and token ids are the bundle's
    commitments  each tensor the circuit read, committed by the verifier (ezkl.kzg_commit, no
               evaluation of the circuit), equals the listed commitment
    consistency  every Taylor order the release runs agrees with the orders the circuit read
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verifier.bundle import Bundle, canonical, commitment_digest, read_bundle
from zkfp.errors import ZkfpError
from zkfp.files import read_json, sha256_file

V_TOL = 1e-6


@dataclass
class VerifyResult:
    ok: bool
    status: str                    # "valid", "invalid", "unusable"
    reasons: list[str] = field(default_factory=list)
    v: list[float] | None = None
    statement: str = ""
    commitment_digest: str | None = None
    checks: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"ok": self.ok, "status": self.status, "reasons": self.reasons, "v": self.v,
                "statement": self.statement, "commitment_digest": self.commitment_digest, "checks": self.checks}


class _Unusable(Exception):
    pass


class _Invalid(Exception):
    pass


@contextmanager
def _refused_by_ezkl(what: str):
    """Turn a failure inside ezkl into a refusal with a reason. ezkl raises on bad input, or
    panics: pyo3's PanicException derives from BaseException, so `except Exception` misses it."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, _Invalid, _Unusable):
        raise
    except BaseException as exc:  # noqa: BLE001 - see above
        raise _Invalid(f"{what}: {exc}") from None


def verify_bundle(bundle_dir, release_dir=None, srs=None, allow_dev_srs: bool = False,
                  progress: Callable[[str], None] | None = None) -> VerifyResult:
    """Check the bundle (and, given `release_dir`, bind it to that release). `progress` receives a
    line before any slow step (the first bundle of a circuit shape derives the key)."""
    checks: dict = {}
    say = progress or (lambda _: None)
    try:
        try:
            b = read_bundle(bundle_dir)
        except ZkfpError as exc:
            raise _Unusable(str(exc)) from None
        v, statement, (plan, info, derived) = _verify(b, srs, allow_dev_srs, checks, say)
        if release_dir is not None:
            _verify_release(b, Path(release_dir), plan, info, derived, checks)
            statement += f"; the release in {release_dir} is that model (its tensors commit to the digest)"
        return VerifyResult(ok=True, status="valid", v=v, statement=statement,
                            commitment_digest=b.commitment_digest, checks=checks)
    except _Invalid as exc:
        return VerifyResult(ok=False, status="invalid", reasons=[str(exc)], checks=checks)
    except _Unusable as exc:
        return VerifyResult(ok=False, status="unusable", reasons=[str(exc)], checks=checks)


def _verify(b: Bundle, srs, allow_dev: bool, checks: dict, say) -> tuple[list[float], str, tuple]:
    """The checks without the release; returns v, the statement, and (shape, SRS, derived
    circuits and keys) for the checks against a release."""
    import ezkl

    if b.ezkl_version != ezkl.__version__:
        raise _Invalid(f"bundle was made with ezkl {b.ezkl_version}, this verifier has {ezkl.__version__}")
    shape = _spec_shape(b)
    checks["spec"] = "ok"
    info = _srs(b, srs, allow_dev, checks)
    plan = _plan(b, shape)
    derived = _derive_keys(b, plan, info, checks, say)
    t = time.perf_counter()
    public = [_check_proof(b, p, c, *derived[c.part.key()], info, shape) for p, c in zip(b.proofs, plan.chunks)]
    checks["proofs"] = len(public)
    checks["proofs_s"] = round(time.perf_counter() - t, 3)
    _check_links(b, plan)
    checks["links"] = "ok"
    _check_v(b, shape, [(derived[c.part.key()][0], c.part.encoded_layers, values)
                        for c, values in zip(plan.chunks, public) if c.part.kind == "encoder"])
    checks["v"] = "ok"
    _check_image(b)
    checks["png"] = "ok"
    statement = (f"v is the fingerprint, by spec circuit {shape.key()} in {len(plan.chunks)} linked proofs, of the "
                 f"model whose commitment digest is {b.commitment_digest} (SRS {info.sha256[:16]}…, {info.kind})")
    return list(b.v), statement, (plan, info, derived)


# -- without the release ---------------------------------------------------------------------

def _spec_shape(b: Bundle):
    from circuits.spec import CircuitShape
    from fingerprint import spec as fspec

    try:
        shape = CircuitShape.from_json(b.shape_json)
    except (KeyError, TypeError, ValueError) as exc:
        raise _Unusable(f"manifest.json has a malformed circuit shape: {exc}") from None
    departures = shape.departures_from_spec()
    if departures:
        raise _Invalid("the bundle's circuit is not the spec's: it declares " + "; ".join(departures))
    if b.circuit_key != shape.key():
        raise _Invalid("the bundle's circuit key is not the key of its shape")
    try:
        rule = fspec.select_tokens(b.vocab, shape.k)
    except ValueError as exc:
        raise _Invalid(f"the declared vocabulary cannot hold the spec's tokens: {exc}") from None
    if list(b.token_ids) != rule:
        raise _Invalid("the bundle's token ids are not the spec's public choice for its vocabulary")
    return shape


def _srs(b: Bundle, srs, allow_dev: bool, checks: dict):
    """The SRS file to verify with: --srs, else this machine's dev SRS or ~/.ezkl/srs/kzg{k}.srs
    with the bundle's hash. Its kind comes from the file (this machine's dev SRS, else unknown)."""
    from circuits import srs as srs_mod

    candidates = [Path(srs)] if srs is not None else [
        *sorted((srs_mod.cache_dir() / "srs").glob("dev-k*.srs")),
        Path.home() / ".ezkl" / "srs" / f"kzg{b.logrows}.srs"]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            info = srs_mod.srs_file(path, b.logrows)
        except ZkfpError as exc:
            if srs is not None:
                raise _Unusable(str(exc)) from None
            continue
        if info.sha256 == b.srs_sha256:
            break
        if srs is not None:
            raise _Invalid(f"the proof was made under another SRS (sha256 {b.srs_sha256[:16]}…), "
                           f"not {path} ({info.sha256[:16]}…)")
    else:
        raise _Unusable(f"no SRS: pass the SRS the proof was made under (sha256 {b.srs_sha256[:16]}…, "
                        f"logrows ≥ {b.logrows}) with --srs FILE")
    if info.kind == "dev" and not allow_dev:
        raise _Invalid("the SRS is a dev SRS made on this machine (insecure: its maker can forge proofs); "
                       "refused without --allow-dev-srs")
    checks["srs"] = {"path": str(info.path), "sha256": info.sha256, "kind": info.kind}
    return info


def _plan(b: Bundle, shape):
    """The chunks the spec cuts this shape into at the bundle's logrows and row budget; the
    bundle must list exactly those proofs, in that order."""
    from circuits import pipeline
    from circuits.plan import make_plan

    with _refused_by_ezkl("cannot lay out this bundle's circuits"):  # ezkl counts the shape's rows
        try:
            logrows = pipeline.plan_logrows(shape, b.chunk_rows)
        except ValueError as exc:
            raise _Invalid(f"the bundle's row budget per chunk does not fit: {exc}") from None
    if logrows != b.logrows:
        raise _Invalid(f"the bundle's logrows {b.logrows} is not its plan's ({logrows})")
    with _refused_by_ezkl("cannot lay out this bundle's circuits"):
        try:
            plan = make_plan(shape, logrows, b.chunk_rows)
        except ValueError as exc:  # raised here, or _refused_by_ezkl would word it as ezkl's failure
            raise _Invalid(f"the bundle's row budget per chunk cannot hold this model: {exc}") from None
    names, want = [p.name for p in b.proofs], [c.name for c in plan.chunks]
    if names != want:
        missing = [n for n in want if n not in names]
        extra = [n for n in names if n not in want]
        why = (f"chunk {missing[0]} is missing" if missing else f"it lists {extra[0]}, which is not a chunk of the plan"
               if extra else "the chunks are not in the plan's order")
        raise _Invalid(f"the bundle's proofs are not the {len(want)} chunks of the spec's plan: {why}")
    return plan


def _derive_keys(b: Bundle, plan, info, checks: dict, say) -> dict:
    """Rebuild each distinct circuit of the plan and derive its key (cached per circuit, logrows
    and SRS); the bundle's settings and keys must be exactly those."""
    from circuits import pipeline

    derived, cached = {}, True
    with _refused_by_ezkl("cannot rebuild this bundle's circuits and derive their keys with this SRS"):
        for key, part in plan.parts.items():
            circuit = pipeline.build(part, plan.logrows)
            if not (pipeline.keys_folder(circuit, info) / "vk.key").is_file():
                cached = False
                say(f"deriving the verification key of the {part.kind} circuit {key[:12]} (logrows {plan.logrows}; "
                    "once per circuit and SRS on this machine, about as long as a setup)")
            derived[key] = (circuit, pipeline.vk(circuit, info))
    for p, c in zip(b.proofs, plan.chunks):
        circuit, vk = derived[c.part.key()]
        try:
            settings = read_json(b.file(p.settings), p.settings)
        except ZkfpError as exc:
            raise _Unusable(str(exc)) from None
        if not isinstance(settings, dict) or \
                pipeline.settings_digest(settings) != pipeline.settings_digest(circuit.settings_json()):
            raise _Invalid(f"{p.settings} is not this circuit's: it differs from the settings the verifier "
                           "derives from the shape")
        if vk.read_bytes() != b.file(p.vk).read_bytes():
            raise _Invalid(f"{p.vk} is not the verification key of this circuit (the verifier derived the key "
                           "from the shape and the SRS; the bundle's differs)")
    checks["key"] = "cached" if cached else "derived"
    return derived


def _witness_with(p, circuit, instances: list, ezkl_version: str) -> dict:
    """A witness carrying only the listed commitments (ezkl's swap reads nothing else of it)."""
    zero = "00" * 32
    specs = circuit.part.committed_io()
    return {
        "inputs": [[zero] * int(np.prod(dims)) for _, dims in specs["inputs"]],
        "pretty_elements": None,
        "outputs": [list(instances)] if not specs["outputs"] else [[zero] * int(np.prod(d)) for _, d in specs["outputs"]],
        "processed_inputs": {"poseidon_hash": None, "polycommit": [pts for _, pts in p.inputs]},
        "processed_params": None,
        "processed_outputs": {"poseidon_hash": None, "polycommit": [pts for _, pts in p.outputs]} if p.outputs else None,
        "max_lookup_inputs": 0,
        "min_lookup_inputs": 0,
        "max_range_size": circuit.part.shape.decomp_base - 1,
        "version": ezkl_version,
    }


def _check_proof(b: Bundle, p, chunk, circuit, vk: Path, info, plan_shape) -> list:
    """The proof holds exactly the listed commitments and verifies; returns its public values."""
    import ezkl

    try:
        proof = read_json(b.file(p.proof), p.proof)
        instances = proof["instances"][0] if proof["instances"] else []
        assert isinstance(instances, list) and isinstance(proof.get("proof"), (str, list))
    except ZkfpError as exc:
        raise _Unusable(str(exc)) from None
    except (TypeError, KeyError, IndexError, AssertionError):
        raise _Unusable(f"{p.proof} is malformed") from None
    if [n for n, _ in p.inputs] != chunk.inputs(plan_shape) or \
            [n for n, _ in p.outputs] != chunk.outputs():
        raise _Invalid(f"proof {p.name} lists commitments for other tensors than its chunk's")
    with tempfile.TemporaryDirectory(prefix="zkfp-verify-") as tmp:
        tmp = Path(tmp)
        shutil.copyfile(b.file(p.proof), tmp / "proof.json")
        (tmp / "witness.json").write_text(json.dumps(_witness_with(p, circuit, instances, b.ezkl_version)))
        with _refused_by_ezkl(f"{p.proof} cannot hold the listed commitments (malformed or truncated proof)"):
            ezkl.swap_proof_commitments(str(tmp / "proof.json"), str(tmp / "witness.json"))
        if json.loads((tmp / "proof.json").read_text()).get("proof") != proof.get("proof"):
            raise _Invalid(f"proof {p.name} does not hold the commitments the manifest lists")
        with _refused_by_ezkl(f"proof {p.name} does not verify under the circuit's key"):
            ezkl.verify(proof_path=str(tmp / "proof.json"), settings_path=str(circuit.settings),
                        vk_path=str(vk), srs_path=str(info.path))
    for name in (p.proof, p.vk, p.settings):
        if p.sha256.get(name) != sha256_file(b.file(name)):
            raise _Invalid(f"{name} differs from the manifest's record of it")
    return instances


def _check_links(b: Bundle, plan) -> None:
    """Every tensor read by several chunks (the token rows, the norm gains, each committed partial
    and the chunk that made it) carries one commitment; the digest is over the release tensors."""
    seen: dict[str, tuple[str, str]] = {}
    for p in b.proofs:
        for name, pts in p.commitments:
            c = canonical(pts)
            if name in seen and seen[name][1] != c:
                raise _Invalid(f"proofs {seen[name][0]} and {p.name} read {name} under different commitments")
            seen.setdefault(name, (p.name, c))
    listed = {name: pts for p in b.proofs for name, pts in p.inputs}
    if commitment_digest([(n, listed[n]) for n in plan.release_tensors()]) != b.commitment_digest:
        raise _Invalid("the commitment digest is not the digest of the commitments the proofs hold")


def _check_v(b: Bundle, shape, encoders: list) -> np.ndarray:
    """v is, layer by layer, zscore(y_l) of the encoders' public values (in layer order), and every
    check is 1 (circuits.graph). `encoders`: (circuit, layers it encodes, public values) each."""
    import ezkl

    from circuits.finish import CHECK_TOL, v_from_public

    vs, all_checks = [], []
    for circuit, layers, instances in encoders:
        scale = int(circuit.settings_json()["model_output_scales"][0])
        with _refused_by_ezkl("the encoder proof's public values are not field elements"):
            values = [ezkl.felt_to_float(f, scale) for f in instances]
        try:
            v, checks = v_from_public(values, shape, layers)
        except ValueError as exc:
            raise _Invalid(f"the encoder proof's public values: {exc}") from None
        vs.append(v)
        all_checks.append(checks)
    v, checks = np.concatenate(vs), np.concatenate(all_checks)
    if not np.all(np.abs(checks - 1) <= CHECK_TOL):
        raise _Invalid(f"the encoder proof's 1/σ checks are {np.round(checks, 6).tolist()}, not 1 within "
                       f"{CHECK_TOL}: the proven z-scores are not z-scores")
    mine = np.asarray(b.v, dtype=np.float64)
    if mine.shape != v.shape or not np.all(np.isfinite(mine)) or np.max(np.abs(mine - v)) > V_TOL:
        raise _Invalid("v in the manifest is not the v the proof establishes")
    return v


def _check_image(b: Bundle) -> None:
    from fingerprint import render

    png = b.file("fingerprint.png").read_bytes()
    if sha256_file(b.file("fingerprint.png")) != b.png_sha256:
        raise _Invalid("fingerprint.png differs from the manifest's record of it")
    ok, why = render.png_matches(png, list(b.v))
    if not ok:
        raise _Invalid(f"fingerprint.png is not the rendering of v ({why})")


# -- against a release -----------------------------------------------------------------------

def _tied_words(tied: bool) -> str:
    return "tied to the embedding" if tied else "its own"


def _verify_release(b: Bundle, release: Path, plan, info, derived: dict, checks: dict) -> None:
    from circuits.consistency import check_taylor_consistency
    from circuits.inputs import Release, release_inputs, shape_of
    from verifier.commit import release_commitments

    shape = plan.shape
    if not release.is_dir():
        raise _Unusable(f"release folder not found: {release}")
    present = {p.name for p in release.iterdir() if p.is_file()}
    if set(b.release_files) != present:
        diff = sorted(set(b.release_files) ^ present)
        raise _Invalid(f"the release's files differ from the bundle's record (e.g. {diff[0]})")
    for name in sorted(b.release_files):
        if sha256_file(release / name) != b.release_files[name]:
            raise _Invalid(f"release file {name} differs from the one the proof was made for (sha256)")
    checks["release_hashes"] = "ok"
    try:
        rel = Release(release)
        mine = shape_of(rel, shape.k, shape.m)
        if mine.key() != shape.key():
            raise _Invalid("the bundle's circuit is not the one for this release's shape")
        if rel.vocab() != b.vocab:
            raise _Invalid(f"the release's vocabulary ({rel.vocab()}) is not the bundle's ({b.vocab})")
        if b.tied_embeddings is not None and b.tied_embeddings != rel.arch.tied_embeddings:
            raise _Invalid(f"the manifest says the release's output head is {_tied_words(b.tied_embeddings)}, its "
                           f"config says {_tied_words(rel.arch.tied_embeddings)} (which thresholds apply)")
        inputs = release_inputs(rel, shape, list(b.token_ids))
        check_taylor_consistency(rel, range(len(shape.layers)), shape.orders)
    except ZkfpError as exc:
        raise _Invalid(f"release refused: {exc}") from None
    checks["consistency"] = "ok"
    t = time.perf_counter()
    listed = {name: pts for p in b.proofs for name, pts in p.inputs}
    tensors = {n: a for (n, _), a in zip(shape.input_specs(), inputs)}
    for name, points in release_commitments(plan, tensors, derived, info.path):
        if canonical(points) != canonical(listed[name]):
            raise _Invalid(f"the release's {name} does not commit to the bundle's commitment: the proof was "
                           "not made from this release")
    checks["commitments_match"] = True
    checks["commit_s"] = round(time.perf_counter() - t, 3)
