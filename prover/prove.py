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
from zkfp.files import atomic_output_dir, sha256_file, write_json

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
    """Prove the fingerprint of the release in `release_dir`; write the bundle to `out_dir`."""
    import ezkl
    import torch

    from circuits import pipeline
    from circuits import srs as srs_mod
    from circuits.finish import v_from_terms
    from circuits.inputs import Release, release_inputs, shape_of
    from circuits.model import float_fingerprint
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

        bar.step("compiling circuit (cached by shape)")
        t = time.perf_counter()
        circuit = pipeline.build(shape, inputs)
        timings["compile_s"] = time.perf_counter() - t
        logrows = circuit.logrows
        info = srs_mod.srs_file(srs, logrows) if srs is not None else srs_mod.dev_srs(logrows)

        bar.step(f"setup (logrows {logrows}, cached by shape and SRS)")
        t = time.perf_counter()
        keys = pipeline.keys(circuit, info)
        timings["setup_s"] = time.perf_counter() - t

        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"zkfp-prove-{os.getpid()}-{time.time_ns()}"
        work.mkdir(parents=True)
        try:
            bar.step("witness")
            (work / "input.json").write_text(pipeline.input_json(inputs))
            t = time.perf_counter()
            witness = ezkl.gen_witness(str(work / "input.json"), str(circuit.compiled), str(work / "witness.json"),
                                       vk_path=str(keys.vk), srs_path=str(info.path))
            timings["witness_s"] = time.perf_counter() - t
            bar.step("proving")
            t = time.perf_counter()
            ezkl.prove(witness=str(work / "witness.json"), model=str(circuit.compiled), pk_path=str(keys.pk),
                       proof_path=str(work / "proof.json"), srs_path=str(info.path))
            timings["prove_s"] = time.perf_counter() - t
            bar.step("checking")
            ezkl.verify(proof_path=str(work / "proof.json"), settings_path=str(circuit.settings),
                        vk_path=str(keys.vk), srs_path=str(info.path))
            settings = circuit.settings_json()
            out_scale = int(settings["model_output_scales"][0])
            proof = json.loads((work / "proof.json").read_text())
            outputs = witness["outputs"][0]
            if proof["instances"][0][-len(outputs):] != outputs:
                raise ZkfpError("internal error: the proof's public outputs are not the witness outputs")
            terms = np.array([ezkl.felt_to_float(f, out_scale) for f in outputs], dtype=np.float64)
            P = load_projection(terms.size, shape.m)
            v = v_from_terms(terms, shape, P)
            v_float = np.asarray(float_fingerprint(shape, torch.from_numpy(P), inputs))
            cos = float(v @ v_float / (np.linalg.norm(v) * np.linalg.norm(v_float)))
            if not cos >= MIN_COSINE:
                raise ZkfpError(f"the proven v disagrees with the float fingerprint (cosine {cos:.4f} < "
                                f"{MIN_COSINE}): the circuit's fixed-point scales do not suit this model")

            bar.step("writing bundle")
            # the commitments as ezkl writes them to the witness file (the returned dict holds objects)
            written = json.loads((work / "witness.json").read_text())
            points = (written.get("processed_inputs") or {}).get("polycommit") or []
            names = [name for name, _ in shape.input_specs()]
            if len(points) != len(names):
                raise ZkfpError(f"internal error: ezkl returned {len(points)} input commitments for {len(names)} inputs")
            with atomic_output_dir(out_dir, force=force) as tmp:
                shutil.copyfile(work / "proof.json", tmp / "proof.json")
                shutil.copyfile(keys.vk, tmp / "vk.key")
                shutil.copyfile(circuit.settings, tmp / "settings.json")
                render.save_png(list(map(float, v)), tmp / bundle_format.PNG)
                entry = bundle_format.ProofEntry(
                    name="fingerprint", proof="proof.json", vk="vk.key", settings="settings.json",
                    commitments=tuple(zip(names, points)),
                    sha256={n: sha256_file(tmp / n) for n in ("proof.json", "vk.key", "settings.json")})
                bundle_format.write_manifest(
                    tmp, ezkl_version=ezkl.__version__, family=rel.arch.family.name, vocab=rel.vocab(),
                    token_ids=token_ids, shape_json=shape.to_json(), circuit_key=shape.key(), logrows=logrows,
                    proofs=[entry], v=v, srs_sha256=info.sha256, release_files=release_files, float_cosine=cos,
                    png_sha256=sha256_file(tmp / bundle_format.PNG),
                    spec=fspec.spec_dict(k=shape.k, layers=len(shape.layers), m=shape.m))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    timings["cosine"] = cos
    return out_dir
