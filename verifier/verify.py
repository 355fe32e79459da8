"""Check a proof bundle against the verifier's own copy of the release.

numpy, safetensors, onnx, Pillow and ezkl only: no torch, no transformers.

`ezkl.verify` alone checks none of the instance values nor the commitments; every binding
below is ours:
  1. bundle format, versions (bundle format, ezkl), files present and well-formed;
  2. the release: sha256 of every file of the verifier's copy equals the bundle's record;
     the token ids are the spec's public choice for its vocabulary; the circuit shape
     recomputed from the release equals the bundle's;
  3. the SRS: a dev SRS is refused unless allowed;
  4. the settings are the ones this circuit shape requires (visibility, scales, instances);
  5. the key: the verifier rebuilds the circuit from the release's shape and derives the
     verification key itself (cached); the bundle's settings and key must be exactly those;
  6. the commitments: ezkl evaluates the circuit on the verifier's own release tensors
     (gen_witness, which quantises and commits them); the commitments are swapped into a copy
     of the proof: a proof made from any other weights fails;
  7. the proof verifies under the derived key, and its public terms are the ones the circuit
     computes from this release;
  8. the public outputs of the proof, decoded, give the manifest's v (recomputed with numpy);
  9. re-rendering v gives the bundle's PNG byte for byte.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zkfp.errors import ZkfpError
from zkfp.files import read_json, sha256_file

BUNDLE_FORMAT = "zkfp-proof-bundle"
BUNDLE_VERSION = 1
MAX_JSON = 64 << 20
V_TOL = 1e-6
BUNDLE_FILES = ("manifest.json", "proof.json", "vk.key", "settings.json", "fingerprint.png")


@dataclass
class VerifyResult:
    ok: bool
    status: str                    # "valid", "invalid", "unusable"
    reasons: list[str] = field(default_factory=list)
    v: list[float] | None = None
    checks: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"ok": self.ok, "status": self.status, "reasons": self.reasons, "v": self.v, "checks": self.checks}


class _Unusable(Exception):
    pass


class _Invalid(Exception):
    pass


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise _Unusable(f"{what} is missing: {path.name}")
    try:
        return read_json(path, what, max_bytes=MAX_JSON)
    except ZkfpError as exc:
        raise _Unusable(str(exc)) from None


def _resolve_srs(manifest_srs: dict, srs, allow_dev: bool, checks: dict):
    from circuits import srs as srs_mod
    from zkfp.errors import ZkfpError

    if not isinstance(manifest_srs, dict) or "logrows" not in manifest_srs or "kind" not in manifest_srs:
        raise _Unusable("bundle manifest has no SRS identity")
    logrows = int(manifest_srs["logrows"])
    kind = manifest_srs["kind"]
    if kind not in ("dev", "ceremony"):
        raise _Unusable(f"unknown SRS kind {kind!r}")
    if kind == "dev" and not allow_dev:
        raise _Invalid("the proof was made with a dev SRS (insecure: its maker can forge proofs); "
                       "refused without --allow-dev-srs")
    if srs is not None:
        try:
            info = srs_mod.ceremony_srs(srs, logrows)
        except ZkfpError as exc:
            raise _Unusable(str(exc)) from None
    elif kind == "dev":
        path = srs_mod.dev_path(int(manifest_srs.get("file_logrows", logrows)))
        if not path.is_file():
            raise _Unusable(f"the bundle was proved with a dev SRS that this machine does not have "
                            f"({path}); pass it with --srs")
        info = srs_mod.ceremony_srs(path, logrows)
    else:
        default = Path.home() / ".ezkl" / "srs" / f"kzg{logrows}.srs"
        if not default.is_file():
            raise _Unusable(f"no SRS: pass the ceremony SRS for logrows {logrows} with --srs FILE")
        info = srs_mod.ceremony_srs(default, logrows)
    if info.kind == "dev" and not allow_dev:
        raise _Invalid("the SRS given is a dev SRS (insecure); refused without --allow-dev-srs")
    checks["srs"] = {"path": str(info.path), "sha256": info.sha256, "kind": info.kind}
    return info


def _check_settings(settings: dict, shape, logrows: int, n_out: int) -> None:
    try:
        ra = settings["run_args"]
        problems = []
        if str(ra["input_visibility"]).lower() not in ("polycommit", "kzgcommit"):
            problems.append(f"input visibility {ra['input_visibility']!r} (must be polycommit)")
        if str(ra["output_visibility"]).lower() != "public":
            problems.append(f"output visibility {ra['output_visibility']!r} (must be public)")
        if str(ra["param_visibility"]).lower() != "fixed":
            problems.append(f"param visibility {ra['param_visibility']!r} (must be fixed)")
        if int(ra["input_scale"]) != shape.input_scale or int(ra["param_scale"]) != shape.param_scale:
            problems.append(f"scales {ra['input_scale']}/{ra['param_scale']} (circuit uses {shape.input_scale})")
        if int(ra["logrows"]) != logrows:
            problems.append(f"logrows {ra['logrows']} (bundle says {logrows})")
        if settings["model_instance_shapes"] != [[n_out]]:
            problems.append(f"instance shapes {settings['model_instance_shapes']} (expected [[{n_out}]])")
        if settings["model_input_scales"] != [shape.input_scale] * shape.n_inputs():
            problems.append(f"input scales {settings['model_input_scales']}")
        if len(settings["model_output_scales"]) != 1:
            problems.append("output scales")
    except (KeyError, TypeError, ValueError) as exc:
        raise _Unusable(f"settings.json is malformed: {exc}") from None
    if problems:
        raise _Invalid("settings.json is not this circuit's: " + "; ".join(problems))


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


def _derive_key(shape, settings: dict, logrows: int, info, bundle: Path, checks: dict, say):
    """Rebuild this shape's circuit (torch-free ONNX, settings from the shape alone) at the bundle's
    logrows, derive its verification key with the SRS, and require the bundle's settings and key
    to be exactly those: a key of any other circuit, however valid, is refused. Returns the
    verifier's own circuit and key file. Cached per (shape, logrows, SRS), so only the first
    bundle of a shape on a machine pays for the setup."""
    from circuits import pipeline

    with _refused_by_ezkl("cannot rebuild this bundle's circuit and derive its key with this SRS"):
        circuit = pipeline.build(shape, logrows=logrows)
        cached = (pipeline.keys_folder(circuit, info) / "vk.key").is_file()
        if not cached:
            say(f"deriving the verification key of this circuit (logrows {logrows}; once per circuit shape "
                f"and SRS on this machine, about as long as a setup)")
        keys = pipeline.keys(circuit, info)
    if pipeline.settings_digest(settings) != pipeline.settings_digest(circuit.settings_json()):
        raise _Invalid("settings.json is not this circuit's: it differs from the settings the verifier "
                       "derives from the release's shape")
    if keys.vk.read_bytes() != (bundle / "vk.key").read_bytes():
        raise _Invalid("vk.key is not the verification key of this circuit (the verifier derived the key "
                       "from the release's shape and the SRS; the bundle's differs)")
    checks["key"] = "cached" if cached else "derived"
    return circuit, keys.vk


def verify_bundle(bundle_dir, release_dir, srs=None, allow_dev_srs: bool = False,
                  progress: Callable[[str], None] | None = None) -> VerifyResult:
    """Check the bundle against the verifier's copy of the release; `progress` receives a line
    before any slow step (the first bundle of a circuit shape derives the key)."""
    checks: dict = {}
    try:
        v = _verify(Path(bundle_dir), Path(release_dir), srs, allow_dev_srs, checks, progress or (lambda _: None))
        return VerifyResult(ok=True, status="valid", reasons=[], v=v, checks=checks)
    except _Invalid as exc:
        return VerifyResult(ok=False, status="invalid", reasons=[str(exc)], checks=checks)
    except _Unusable as exc:
        return VerifyResult(ok=False, status="unusable", reasons=[str(exc)], checks=checks)


def _verify(bundle: Path, release: Path, srs, allow_dev: bool, checks: dict, say) -> list[float]:
    import ezkl

    from circuits import pipeline
    from circuits.finish import n_outputs, v_from_terms
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.projection import load_projection
    from circuits.spec import CircuitShape
    from fingerprint import render
    from fingerprint import spec as fspec
    from zkfp.errors import ZkfpError

    if not bundle.is_dir():
        raise _Unusable(f"bundle folder not found: {bundle}")
    if not release.is_dir():
        raise _Unusable(f"release folder not found: {release}")
    # 1. format and files
    m = _read_json(bundle / "manifest.json", "bundle manifest")
    if not isinstance(m, dict) or m.get("format") != BUNDLE_FORMAT:
        raise _Unusable("manifest.json is not a zkfp proof bundle manifest")
    if m.get("format_version") != BUNDLE_VERSION:
        raise _Unusable(f"unknown bundle format_version {m.get('format_version')!r} (this verifier reads {BUNDLE_VERSION})")
    if m.get("ezkl_version") != ezkl.__version__:
        raise _Invalid(f"bundle was made with ezkl {m.get('ezkl_version')}, this verifier has {ezkl.__version__}")
    for name in BUNDLE_FILES:
        if not (bundle / name).is_file():
            raise _Unusable(f"bundle file missing: {name}")
    proofs = m.get("proofs")
    if not isinstance(proofs, list) or len(proofs) != 1 or not isinstance(proofs[0], dict):
        raise _Unusable("manifest lists no proof (or more than this verifier reads)")
    entry = proofs[0]
    if (entry.get("proof"), entry.get("vk"), entry.get("settings")) != ("proof.json", "vk.key", "settings.json"):
        raise _Unusable("manifest proof entry names unexpected files")
    try:
        shape = CircuitShape.from_json(m["circuit"]["shape"])
        token_ids = [int(t) for t in m["token_ids"]]
        v_manifest = np.asarray(m["v"], dtype=np.float64)
        recorded = dict(m["release"]["files"])
        out_felts = list(m["outputs_felts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _Unusable(f"manifest.json is malformed: {exc}") from None
    proof = _read_json(bundle / "proof.json", "proof.json")
    settings = _read_json(bundle / "settings.json", "settings.json")
    checks["format"] = "ok"

    # 2. the release
    present = {p.name for p in release.iterdir() if p.is_file()}
    if set(recorded) != present:
        diff = sorted(set(recorded) ^ present)
        raise _Invalid(f"the release's files differ from the bundle's record (e.g. {diff[0]})")
    for name in sorted(recorded):
        if sha256_file(release / name) != recorded[name]:
            raise _Invalid(f"release file {name} differs from the one the proof was made for (sha256)")
    checks["release_hashes"] = "ok"
    try:
        rel = Release(release)
        mine = shape_of(rel, shape.k, len(shape.layers), shape.m)
    except ZkfpError as exc:
        raise _Unusable(f"release unreadable: {exc}") from None
    if mine.key() != shape.key() or m["circuit"].get("key") != shape.key():
        raise _Invalid("the circuit in the bundle is not the one for this release's shape")
    if token_ids != fspec.select_tokens(rel.vocab(), shape.k):
        raise _Invalid("the bundle's token ids are not the spec's public choice for this vocabulary")
    checks["shape_and_tokens"] = "ok"

    # 3. SRS
    logrows = int(m["srs"]["logrows"]) if isinstance(m.get("srs"), dict) and "logrows" in m["srs"] else -1
    info = _resolve_srs(m.get("srs"), srs, allow_dev, checks)

    # 4. settings
    n_out = n_outputs(shape)
    _check_settings(settings, shape, logrows, n_out)
    checks["settings"] = "ok"

    # 5. the key, derived by the verifier
    circuit, vk = _derive_key(shape, settings, logrows, info, bundle, checks, say)
    settings_path = circuit.settings

    # 6+7. commitments recomputed from the verifier's release, swapped in, then verify
    try:
        inputs = release_inputs(rel, shape, token_ids)
    except ZkfpError as exc:
        raise _Unusable(f"release unreadable: {exc}") from None
    try:
        instances = proof["instances"][0]
        if not isinstance(instances, list) or len(instances) != n_out:
            raise _Invalid(f"the proof has {len(instances)} public values, the circuit has {n_out}")
    except (KeyError, TypeError, IndexError):
        raise _Unusable("proof.json is malformed (no instances)") from None
    with tempfile.TemporaryDirectory(prefix="zkfp-verify-") as tmp:
        tmp = Path(tmp)
        # ezkl quantises and commits the verifier's own tensors (one pass: the SRS is loaded once)
        (tmp / "input.json").write_text(pipeline.input_json(inputs))
        with _refused_by_ezkl("cannot evaluate the circuit on this release"):
            witness = ezkl.gen_witness(str(tmp / "input.json"), str(circuit.compiled), str(tmp / "witness.json"),
                                       vk_path=str(vk), srs_path=str(info.path))
        shutil.copyfile(bundle / "proof.json", tmp / "proof.json")
        before = json.loads((tmp / "proof.json").read_text()).get("proof")
        with _refused_by_ezkl("proof.json cannot hold the release's commitments (malformed or truncated proof)"):
            ezkl.swap_proof_commitments(str(tmp / "proof.json"), str(tmp / "witness.json"))
        checks["commitments_match"] = before == json.loads((tmp / "proof.json").read_text()).get("proof")
        if not checks["commitments_match"]:
            raise _Invalid("the proof was not made from this release: its commitments differ from the ones "
                           "recomputed from the release tensors")
        with _refused_by_ezkl("the proof does not verify under the circuit's key"):
            ezkl.verify(proof_path=str(tmp / "proof.json"), settings_path=str(settings_path),
                        vk_path=str(vk), srs_path=str(info.path))
    if [str(x) for x in witness["outputs"][0]] != [str(x) for x in instances]:
        raise _Invalid("the proof's public terms are not the ones the circuit computes from this release")
    checks["proof"] = "ok"

    # 8. public outputs → v
    if [str(x) for x in instances] != [str(x) for x in out_felts]:
        raise _Invalid("the manifest's output field elements differ from the proof's public values")
    scale = int(settings["model_output_scales"][0])
    terms = np.array([ezkl.felt_to_float(f, scale) for f in instances], dtype=np.float64)
    try:
        P = load_projection(terms.size, shape.m)
    except ZkfpError as exc:
        raise _Unusable(str(exc)) from None
    v = v_from_terms(terms, shape, P)
    if v_manifest.shape != v.shape or not np.all(np.isfinite(v_manifest)) or np.max(np.abs(v_manifest - v)) > V_TOL:
        raise _Invalid("v in the manifest is not the v the proof establishes")
    checks["v"] = "ok"

    # 9. the picture
    if render.png_bytes([float(x) for x in v_manifest]) != (bundle / "fingerprint.png").read_bytes():
        raise _Invalid("fingerprint.png is not the rendering of v")
    checks["png"] = "ok"

    # 10. the manifest's own record of the bundle files
    record = entry.get("sha256") if isinstance(entry.get("sha256"), dict) else {}
    for name in ("proof.json", "vk.key", "settings.json"):
        if record.get(name) != sha256_file(bundle / name):
            raise _Invalid(f"{name} differs from the manifest's record of it")
    checks["bundle_record"] = "ok"
    return [float(x) for x in v_manifest]
