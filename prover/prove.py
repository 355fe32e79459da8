"""Prove that a release's fingerprint was computed honestly; write the bundle.

The computation is cut into chunks (circuits.plan) that are proved as Ray tasks: on this machine
by default (`ray.init` with its CPUs), on a cluster given its address. Finished chunks are kept
in a work folder beside the bundle (`<bundle>.partial/`) so that an interrupted run resumes
where it stopped; the bundle itself (format: `verifier.bundle`) is written, atomically, only
when every chunk is proved and checked, so an interrupted run never leaves a bundle.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from zkfp.errors import ZkfpError
from zkfp.files import atomic_output_dir, sha256_file

from verifier import bundle as bundle_format

MIN_COSINE = 0.99
WORK_SUFFIX = ".partial"


class _Progress:
    """A rich progress bar counting steps and chunks (or nothing, when disabled)."""

    def __init__(self, enabled: bool):
        self.p, self.task = None, None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn())

    def __enter__(self):
        if self.p:
            self.p.__enter__()
        return self

    def __exit__(self, *exc):
        return self.p.__exit__(*exc) if self.p else False

    def stage(self, text: str, total: int | None = None) -> None:
        """A new step with its own count (None: none) and time. A task of its own: rich's update
        cannot take a count away, so "checking" would show the last step's "0/1"."""
        if self.p:
            if self.task is not None:
                self.p.remove_task(self.task)
            self.task = self.p.add_task(text, total=total)

    def advance(self) -> None:
        if self.p:
            self.p.advance(self.task)


def prove(release_dir, out_dir, srs=None, dev_srs: bool = False, progress: bool = True, force: bool = False,
          timings: dict | None = None, workers: int | None = None, ray_address: str | None = None,
          chunk_rows: int | None = None) -> Path:
    """Prove the fingerprint of the release in `release_dir`; write the bundle to `out_dir`.

    `workers`: chunks proved at once on this machine (default: as many as its memory and CPUs
    hold); `ray_address`: an existing Ray cluster instead; `chunk_rows`: a smaller row budget per
    chunk than the circuit's 2^logrows (more, smaller chunks at the smallest logrows that holds
    them, so each proof needs less memory; recorded in the bundle)."""
    import ezkl

    from circuits import pipeline
    from circuits import srs as srs_mod
    from circuits.plan import make_plan
    from fingerprint import render
    from fingerprint import spec as fspec
    from fingerprint import tokens as token_strings
    from prover.runner import RayRunner

    if srs is None and not dev_srs:
        raise ZkfpError("no SRS: pass --srs FILE (a ceremony SRS, e.g. kzg17.srs) or --dev-srs "
                        "(an insecure local SRS, for tests only)")
    timings = {} if timings is None else timings
    release_dir, out_dir = Path(release_dir), Path(out_dir)
    if out_dir.exists() and not force:
        raise ZkfpError(f"output exists: {out_dir} (pass --force to replace it)")
    start = time.perf_counter()
    with _Progress(progress) as bar:
        bar.stage("reading release")
        rel, shape, token_ids, tensors, release_files = _read_release(release_dir)
        try:
            logrows = pipeline.plan_logrows(shape, chunk_rows)
        except ValueError as exc:
            raise ZkfpError(f"--chunk-rows: {exc}") from None
        pipeline.check_fits(logrows)
        try:
            plan = make_plan(shape, logrows, chunk_rows)
        except ValueError as exc:
            raise ZkfpError(f"this model cannot be cut into chunks of 2^{logrows} rows: {exc}") from None
        runner = RayRunner(ray_address, workers, logrows, bar)
        info = srs_mod.srs_file(srs, logrows) if srs is not None else srs_mod.dev_srs(logrows)
        work = _work_folder(out_dir, {"release": release_files, "srs": info.sha256, "plan": plan.to_json(),
                                      "ezkl": ezkl.__version__})
        _trim_key_cache(plan, info)
        with runner as run:
            t = time.perf_counter()
            timings["setup_costs"] = run.setup(plan, info)
            timings["setup_s"] = time.perf_counter() - t
            t = time.perf_counter()
            results, timings["resumed"] = _prove_chunks(plan, tensors, info, work, run)
            timings["prove_s"] = time.perf_counter() - t
        timings["workers"] = run.workers

        bar.stage("checking")
        v, cos = _check(plan, results, tensors, info, work)
        bar.stage("writing bundle")
        with atomic_output_dir(out_dir, force=force) as tmp:
            entries = [_entry(plan, c, results[c.name], work, tmp, info) for c in plan.chunks]
            render.save_png(list(map(float, v)), tmp / bundle_format.PNG)
            bundle_format.write_manifest(
                tmp, ezkl_version=ezkl.__version__, family=rel.arch.family.name, vocab=rel.vocab(),
                token_ids=token_ids, shape_json=shape.to_json(), circuit_key=shape.key(), logrows=logrows,
                chunk_rows=plan.chunk_rows, proofs=entries, release_commitments=_release_commitments(plan, entries),
                v=v, srs_sha256=info.sha256, release_files=release_files, float_cosine=cos,
                png_sha256=sha256_file(tmp / bundle_format.PNG),
                spec=fspec.spec_dict(layers=len(shape.layers), k=shape.k, m=shape.m, mlp=shape.mlp),
                tokens=token_strings.strings_of(release_dir, token_ids), tied_embeddings=rel.arch.tied_embeddings)
        shutil.rmtree(work, ignore_errors=True)
    timings.update(cosine=cos, chunks=len(plan.chunks), circuits=len(plan.parts), total_s=time.perf_counter() - start,
                   chunk_costs={c.name: results[c.name].get("cost") for c in plan.chunks},
                   plan=plan.to_json())
    return out_dir


def _trim_key_cache(plan, info) -> None:
    """Before setup, drop older proving keys beyond $ZKFP_KEYS_MAX_GB (at 2^17 one is already over
    1 GB); this plan's stay, so a re-run or the next release of this shape skips setup."""
    from circuits import pipeline

    # named, not built: compiling stays in the runner's setup stage, in parallel
    keep = {pipeline.keys_folder_of(pipeline.circuit_name(part, plan.logrows), info) for part in plan.parts.values()}
    pipeline.trim_keys(pipeline.keys_max_bytes(), keep)


def _read_release(release_dir: Path):
    """The release checked against its manifest, the model's circuit shape, the spec's tokens and
    the whole circuit inputs (name → array)."""
    from circuits.inputs import Release, release_inputs, shape_of
    from fingerprint import spec as fspec
    from taylor.release import ReleaseReader

    ReleaseReader(release_dir, verify=True).close()  # every file's sha256, shapes, format
    rel = Release(release_dir)
    # the hashes just checked against the manifest, plus the manifest's own
    release_files = {name: info["sha256"] for name, info in rel.files.items()}
    release_files["manifest.json"] = sha256_file(release_dir / "manifest.json")
    shape = shape_of(rel, fspec.K_TOKENS, fspec.M_DIM)
    token_ids = fspec.select_tokens(rel.vocab(), shape.k)
    inputs = release_inputs(rel, shape, token_ids)
    return rel, shape, token_ids, {n: a for (n, _), a in zip(shape.input_specs(), inputs)}, release_files


def _work_folder(out_dir: Path, identity: dict) -> Path:
    """The bundle-in-progress folder: kept across runs of the same job (release, SRS, plan, ezkl),
    emptied when the job differs."""
    work = out_dir.with_name(out_dir.name + WORK_SUFFIX)
    job = work / "job.json"
    try:
        same = json.loads(job.read_text()) == identity
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(work, ignore_errors=True)
        (work / "inputs").mkdir(parents=True)
        job.write_text(json.dumps(identity))
    return work


def _prove_chunks(plan, tensors: dict, info, work: Path, run) -> tuple[dict[str, dict], int]:
    """Prove every chunk not already proved in `work`, level by level (a sum or the encoder needs
    its sources' committed values); returns each chunk's result and how many were reused."""
    from circuits.finish import inverse_sigmas, term_scale_problem
    from circuits.plan import chunk_inputs
    from circuits.pipeline import input_json
    from prover import tasks

    results = {c.name: tasks.read_result(work, c.name) for c in plan.chunks}
    done = {n for n, r in results.items() if r is not None}
    levels = _levels(plan)
    for i, level in enumerate(levels):
        todo = [c for c in level if c.name not in done]
        roots = None
        if any(c.part.kind == "encoder" for c in todo):  # every encoder's u_t come from the summed terms
            terms = _summed_terms(plan, results)
            problem = term_scale_problem(terms, plan.shape)
            if problem:
                raise ZkfpError(problem)
            roots = np.sqrt(inverse_sigmas(terms, plan.shape))
        for c in todo:
            path = work / "inputs" / f"{c.name}.json"
            if c.part.kind == "terms":
                path.write_text(input_json(chunk_inputs(c, plan.shape, tensors)))
                continue
            data = [results[s]["values"] for s in c.sources]
            if c.part.kind == "encoder":
                data.append(roots[list(c.part.output_terms)].tolist())
            path.write_text(json.dumps({"input_data": data}))
        what = ("proving chunks" if i == 0 else "proving sums" if i < len(levels) - 1
                else "proving the encoder" if len(level) == 1 else "proving the encoders")
        run.prove(todo, plan.logrows, info, work, what, already=len(level) - len(todo))
        for c in todo:
            results[c.name] = tasks.read_result(work, c.name)
            if results[c.name] is None:
                raise ZkfpError(f"internal error: chunk {c.name} finished without a result")
    return results, len(done)


def _levels(plan) -> list[list]:
    levels, placed = [], set()
    remaining = list(plan.chunks)
    while remaining:
        level = [c for c in remaining if all(s in placed for s in c.sources)]
        levels.append(level)
        placed |= {c.name for c in level}
        remaining = [c for c in remaining if c.name not in placed]
    return levels


def _summed_terms(plan, results: dict) -> list[str]:
    """The model's terms (T·k² field elements): every terms chunk's committed partials, summed."""
    from circuits.finish import felts_to_ints, ints_to_felts

    kk = plan.shape.k ** 2
    total = [[0] * kk for _ in range(plan.shape.n_terms())]
    for c in plan.terms_chunks:
        values = felts_to_ints(results[c.name]["values"])
        for j, t in enumerate(c.terms):
            total[t] = [a + b for a, b in zip(total[t], values[j * kk:(j + 1) * kk])]
    return ints_to_felts([x for row in total for x in row])


def _check(plan, results: dict, tensors: dict, info, work: Path) -> tuple[np.ndarray, float]:
    """Every proof verifies, each link holds in the witnesses, and the proven v agrees with the
    float fingerprint of the same tensors; returns (v, cosine)."""
    import ezkl

    from circuits import pipeline
    from circuits.finish import CHECK_TOL, v_from_public, v_from_terms
    from circuits.graph import reference_terms
    from circuits.projection import load_projection
    from prover import tasks

    outputs = {}
    for c in plan.chunks:
        circuit = pipeline.build(c.part, plan.logrows)
        ezkl.verify(proof_path=str(tasks.proof_path(work, c.name)), settings_path=str(circuit.settings),
                    vk_path=str(pipeline.vk(circuit, info)), srs_path=str(info.path))
        for name, pts in zip(c.outputs(), results[c.name]["outputs"]):
            outputs[name] = pts
        for name, pts in zip(c.inputs(plan.shape), results[c.name]["inputs"]):
            if name in outputs and outputs[name] != pts:
                raise ZkfpError(f"internal error: {c.name} reads {name} under another commitment than its maker's")
    parts = []
    for encoder in plan.encoders:
        scale = int(pipeline.build(encoder.part, plan.logrows).settings_json()["model_output_scales"][0])
        parts.append(v_from_public([ezkl.felt_to_float(f, scale) for f in results[encoder.name]["values"]],
                                   plan.shape, encoder.part.encoded_layers))
    v, checks = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if not np.all(np.abs(checks - 1) <= CHECK_TOL):
        raise ZkfpError(f"internal error: the encoder's checks are {checks.tolist()}, not 1")
    shape = plan.shape
    whole = reference_terms(shape, [tensors[n] for n, _ in shape.input_specs()])
    v_float = v_from_terms(whole, shape, load_projection(shape.k, shape.m))
    cos = float(v @ v_float / (np.linalg.norm(v) * np.linalg.norm(v_float)))
    if not cos >= MIN_COSINE:
        raise ZkfpError(f"the proven v disagrees with the float fingerprint (cosine {cos:.4f} < "
                        f"{MIN_COSINE}): the circuit's fixed-point scales do not suit this model")
    return v, cos


def _entry(plan, chunk, result: dict, work: Path, tmp: Path, info) -> bundle_format.ProofEntry:
    """Copy one chunk's proof, key and settings into the bundle; its manifest entry."""
    from circuits import pipeline
    from prover import tasks

    circuit = pipeline.build(chunk.part, plan.logrows)
    first = next(c for c in plan.chunks if c.part.key() == chunk.part.key())
    files = bundle_format.part_files(chunk.name, circuit=first.name)
    shutil.copyfile(tasks.proof_path(work, chunk.name), tmp / files["proof"])
    _share(pipeline.vk(circuit, info), tmp / files["vk"])
    _share(circuit.settings, tmp / files["settings"])
    return bundle_format.ProofEntry(
        name=chunk.name, **files,
        inputs=tuple(zip(chunk.inputs(plan.shape), result["inputs"])),
        outputs=tuple(zip(chunk.outputs(), result["outputs"])),
        sha256={f: sha256_file(tmp / f) for f in files.values()})


def _share(src: Path, dst: Path) -> None:
    """Chunks of one kind share one key and settings file in the bundle (named after the circuit)."""
    if not dst.exists():
        shutil.copyfile(src, dst)


def _release_commitments(plan, entries) -> list[tuple[str, object]]:
    """(tensor, commitment) of every release tensor the chunks read, each once, in plan order."""
    listed = {name: pts for e in entries for name, pts in e.inputs}
    return [(name, listed[name]) for name in plan.release_tensors()]
