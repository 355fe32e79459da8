"""Prove that a release's fingerprint was computed honestly; write the bundle.

The bundle folder (written atomically) is described in `verifier.bundle`, which owns the format.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from zkfp.errors import ZkfpError
from zkfp.files import atomic_output_dir, sha256_file

from verifier import bundle as bundle_format

MIN_COSINE = 0.99


def _progress(enabled: bool):
    if not enabled:
        class _Null:
            def __enter__(self):
                return self

            def __exit__(self, *a):
                return False

            def step(self, text):
                pass
        return _Null()
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    class _Rich:
        def __init__(self):
            self.p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                              TimeElapsedColumn(), transient=False)
            self.task = None

        def __enter__(self):
            self.p.__enter__()
            self.task = self.p.add_task("proving", total=7)
            return self

        def __exit__(self, *a):
            return self.p.__exit__(*a)

        def step(self, text):
            self.p.update(self.task, description=text, advance=1)
    return _Rich()


def prove(release_dir, out_dir, srs=None, dev_srs: bool = False, progress: bool = True,
          force: bool = False, timings: dict | None = None) -> Path:
    """Prove the fingerprint of the release in `release_dir`; write the bundle to `out_dir`.

    Two proofs, linked by the commitment to the terms: the terms circuit reads the release tensors
    (committed) and commits the terms; the encoder circuit reads that commitment and the private
    1/σ per term and makes y and the checks public (circuits.graph)."""
    import ezkl

    from circuits import pipeline
    from circuits import srs as srs_mod
    from circuits.finish import CHECK_TOL, inverse_sigmas, term_scale_problem, v_from_public, v_from_terms
    from circuits.graph import reference_terms
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.projection import load_projection
    from fingerprint import render
    from fingerprint import spec as fspec
    from taylor.release import ReleaseReader

    if srs is None and not dev_srs:
        raise ZkfpError("no SRS: pass --srs FILE (a ceremony SRS, e.g. kzg17.srs) or --dev-srs "
                        "(an insecure local SRS, for tests only)")
    timings = {} if timings is None else timings
    release_dir, out_dir = Path(release_dir), Path(out_dir)
    if out_dir.exists() and not force:
        raise ZkfpError(f"output exists: {out_dir} (pass --force to replace it)")
    with _progress(progress) as bar:
        bar.step("reading release")
        ReleaseReader(release_dir, verify=True).close()  # every file's sha256, shapes, format
        rel = Release(release_dir)
        # the hashes just checked against the manifest, plus the manifest's own
        release_files = {name: info["sha256"] for name, info in rel.files.items()}
        release_files["manifest.json"] = sha256_file(release_dir / "manifest.json")
        shape = shape_of(rel, fspec.K_TOKENS, fspec.N_LAYERS, fspec.M_DIM)
        pipeline.check_fits(shape)
        token_ids = fspec.select_tokens(rel.vocab(), shape.k)
        inputs = release_inputs(rel, shape, token_ids)

        bar.step("compiling circuits (cached by shape)")
        t = time.perf_counter()
        logrows = pipeline.logrows_for(shape)
        circuits = {part: pipeline.build(shape, part, logrows) for part in pipeline.PARTS}
        timings["compile_s"] = time.perf_counter() - t
        info = srs_mod.srs_file(srs, logrows) if srs is not None else srs_mod.dev_srs(logrows)

        bar.step(f"setup (logrows {logrows}, cached by shape and SRS)")
        t = time.perf_counter()
        keys = {part: pipeline.keys(c, info) for part, c in circuits.items()}
        timings["setup_s"] = time.perf_counter() - t

        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"zkfp-prove-{os.getpid()}-{time.time_ns()}"
        work.mkdir(parents=True)
        try:
            bar.step("witnesses")
            t = time.perf_counter()
            (work / "terms.input.json").write_text(pipeline.input_json(inputs))
            terms = _witness(work, "terms", circuits["terms"], keys["terms"], info)
            term_felts = terms["outputs"][0]
            problem = term_scale_problem(term_felts, shape)
            if problem:
                raise ZkfpError(problem)
            inv = inverse_sigmas(term_felts, shape)
            (work / "encoder.input.json").write_text(json.dumps({"input_data": [term_felts, inv.tolist()]}))
            encoder = _witness(work, "encoder", circuits["encoder"], keys["encoder"], info)
            if encoder["processed_inputs"]["polycommit"][0] != terms["processed_outputs"]["polycommit"][0]:
                raise ZkfpError("internal error: the encoder's terms commitment is not the terms circuit's")
            timings["witness_s"] = time.perf_counter() - t

            bar.step("proving")
            t = time.perf_counter()
            for part, c in circuits.items():
                ezkl.prove(witness=str(work / f"{part}.witness.json"), model=str(c.compiled),
                           pk_path=str(keys[part].pk), proof_path=str(work / f"{part}.proof.json"),
                           srs_path=str(info.path))
            timings["prove_s"] = time.perf_counter() - t

            bar.step("checking")
            for part, c in circuits.items():
                ezkl.verify(proof_path=str(work / f"{part}.proof.json"), settings_path=str(c.settings),
                            vk_path=str(keys[part].vk), srs_path=str(info.path))
            scale = int(circuits["encoder"].settings_json()["model_output_scales"][0])
            v, checks = v_from_public([ezkl.felt_to_float(f, scale) for f in encoder["outputs"][0]], shape)
            if not np.all(np.abs(checks - 1) <= CHECK_TOL):
                raise ZkfpError(f"internal error: the encoder's checks are {checks.tolist()}, not 1")
            v_float = v_from_terms(reference_terms(shape, inputs), shape, load_projection(shape.n_terms() * shape.k ** 2,
                                                                                          shape.m))
            cos = float(v @ v_float / (np.linalg.norm(v) * np.linalg.norm(v_float)))
            if not cos >= MIN_COSINE:
                raise ZkfpError(f"the proven v disagrees with the float fingerprint (cosine {cos:.4f} < "
                                f"{MIN_COSINE}): the circuit's fixed-point scales do not suit this model")

            bar.step("writing bundle")
            with atomic_output_dir(out_dir, force=force) as tmp:
                entries = []
                for part, witness in (("terms", terms), ("encoder", encoder)):
                    files = bundle_format.part_files(part)
                    shutil.copyfile(work / f"{part}.proof.json", tmp / files["proof"])
                    shutil.copyfile(keys[part].vk, tmp / files["vk"])
                    shutil.copyfile(circuits[part].settings, tmp / files["settings"])
                    io = shape.committed_io(part)
                    outputs = (witness["processed_outputs"] or {}).get("polycommit") or []
                    entries.append(bundle_format.ProofEntry(
                        name=part, **files,
                        inputs=tuple(zip([n for n, _ in io["inputs"]], witness["processed_inputs"]["polycommit"])),
                        outputs=tuple(zip([n for n, _ in io["outputs"]], outputs)),
                        sha256={f: sha256_file(tmp / f) for f in files.values()}))
                render.save_png(list(map(float, v)), tmp / bundle_format.PNG)
                bundle_format.write_manifest(
                    tmp, ezkl_version=ezkl.__version__, family=rel.arch.family.name, vocab=rel.vocab(),
                    token_ids=token_ids, shape_json=shape.to_json(), circuit_key=shape.key(), logrows=logrows,
                    proofs=entries, v=v, srs_sha256=info.sha256, release_files=release_files, float_cosine=cos,
                    png_sha256=sha256_file(tmp / bundle_format.PNG),
                    spec=fspec.spec_dict(k=shape.k, layers=len(shape.layers), m=shape.m))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    timings["cosine"] = cos
    return out_dir


def _witness(work: Path, part: str, circuit, keys, info) -> dict:
    """ezkl's witness of one part, read back from the file it writes (the returned object holds
    commitments as Python objects; the file holds them as the proof does)."""
    import ezkl

    ezkl.gen_witness(str(work / f"{part}.input.json"), str(circuit.compiled), str(work / f"{part}.witness.json"),
                     vk_path=str(keys.vk), srs_path=str(info.path))
    return json.loads((work / f"{part}.witness.json").read_text())
