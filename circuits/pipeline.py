"""The circuit compiled with ezkl: its ONNX graph, settings, compile, setup, and the cache keyed by shape.

The fingerprint is proved by two circuits ("parts", see circuits.graph): "terms" and "encoder".
Both use one logrows (they share the committed terms, and a commitment depends on logrows), the
smallest that holds the larger of the two; it follows from the shape alone (no lookups, so
nothing depends on the data), so prover, verifier and `zkfp commit` all derive the same.

Cache layout (root: $ZKFP_CACHE or ~/.cache/zkfp):
  circuits/<shape key>.logrows                     the shape's logrows
  circuits/<shape key>-<part>-k<logrows>/          network.onnx, settings.json, model.compiled, shape.json
  keys/<shape key>-<part>-k<logrows>-<srs sha256[:16]>/   vk.key, pk.key
A second release of the same shape skips export, compile and setup. Nothing here imports
torch: the verifier rebuilds the circuits and their keys with this module.
Every entry is written to a temporary folder and renamed into place, so a crash never leaves
a half-built entry behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from circuits.spec import CircuitShape, LayerShape
from circuits.srs import SrsInfo, cache_dir
from zkfp.errors import ZkfpError

REBASE_MULTIPLIER = 6  # rescale only values above 6·input_scale: intermediates are never rescaled
PROVE_BYTES_PER_ROW = 30_000  # peak prover memory per circuit row, measured (see max_logrows)


PARTS = ("terms", "encoder")
ROW_RESERVE = 1024  # rows kept free below 2^logrows (ezkl's blinding rows and more)


@dataclass(frozen=True)
class Circuit:
    shape: CircuitShape
    part: str
    folder: Path

    @property
    def onnx(self) -> Path:
        return self.folder / "network.onnx"

    @property
    def settings(self) -> Path:
        return self.folder / "settings.json"

    @property
    def compiled(self) -> Path:
        return self.folder / "model.compiled"

    def settings_json(self) -> dict:
        return json.loads(self.settings.read_text())

    @property
    def logrows(self) -> int:
        return int(self.settings_json()["run_args"]["logrows"])


@dataclass(frozen=True)
class Keys:
    folder: Path

    @property
    def vk(self) -> Path:
        return self.folder / "vk.key"

    @property
    def pk(self) -> Path:
        return self.folder / "pk.key"


def max_logrows(memory_bytes: int | None = None) -> int:
    """The largest circuit this machine can prove: proving takes ~30 KB per circuit row (measured
    on ezkl 23.0.5 by benchmarks/proof_cost.py: 2.0 GB at 2^16 rows, 3.8 GB at 2^17, 14.5 GB at
    2^19), and we allow 80 % of the machine's memory."""
    if memory_bytes is None:
        memory_bytes = _machine_memory()
    return max(1, int(math.log2(0.8 * memory_bytes / PROVE_BYTES_PER_ROW)))


def _machine_memory() -> int:
    """Physical memory, or the container's cgroup limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            total = min(total, int(Path(limit_file).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            continue
    return total


def _largest_hidden_that_fits(shape: CircuitShape, limit: int) -> int:
    """Scale the model's width (same heads, MLP ratio and expanded fraction) down until it fits."""
    for h in range(shape.hidden - shape.hidden % 16, 15, -16):
        f = h / shape.hidden
        smaller = replace(shape, hidden=h, head_dim=max(1, round(shape.head_dim * f)),
                          intermediate=max(1, round(shape.intermediate * f)),
                          layers=tuple(LayerShape(round(l.expanded * f), max(1, round(shape.intermediate * f))
                                                  - round(l.expanded * f)) for l in shape.layers))
        if smaller.estimate_logrows() <= limit:
            return h
    return 0


def check_fits(shape: CircuitShape, limit: int | None = None) -> None:
    """Refuse, before any work, a circuit too large for this machine, saying what fits."""
    limit = max_logrows() if limit is None else limit
    k = shape.estimate_logrows()
    if k <= limit:
        return
    raise ZkfpError(
        f"this model needs one circuit of about 2^{k} rows ({shape.weight_elements():,} committed weight "
        f"elements of the last {len(shape.layers)} layers at k={shape.k} tokens), about "
        f"{(PROVE_BYTES_PER_ROW << k) / 1e9:.0f} GB to prove; this machine proves circuits up to 2^{limit} rows. "
        f"A model of this architecture fits up to hidden size {_largest_hidden_that_fits(shape, limit)} "
        f"(with its head count and MLP ratio). Chunked circuits, which would split it, are not built yet."
    )


def run_args(shape: CircuitShape, part: str):
    """ezkl's run arguments of one part. Inputs are committed (polycommit) and bound by the
    verifier's own commitments or by the link between the parts, so they are not range-checked;
    the terms leave the terms circuit committed, the encoder's values are public."""
    import ezkl

    ra = ezkl.PyRunArgs()
    ra.input_visibility = "polycommit"
    ra.param_visibility = "fixed"
    ra.decomp_base = shape.decomp_base
    ra.ignore_range_check_inputs_outputs = True
    if part == "terms":
        ra.output_visibility = "polycommit"
        ra.input_scale, ra.param_scale = shape.input_scale, shape.param_scale
        ra.scale_rebase_multiplier = REBASE_MULTIPLIER
        ra.decomp_legs, ra.num_inner_cols = shape.decomp_legs, shape.num_inner_cols
    elif part == "encoder":
        ra.output_visibility = "public"
        ra.input_scale, ra.param_scale = shape.enc_input_scale, shape.enc_param_scale
        ra.scale_rebase_multiplier = 1  # everything back at the input scale after each product
        ra.decomp_legs, ra.num_inner_cols = shape.enc_decomp_legs, shape.enc_inner_cols
    else:
        raise ValueError(f"unknown circuit part {part!r}")
    return ra


def _atomic_folder(final: Path):
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))


def _publish(tmp: Path, final: Path) -> None:
    try:
        os.replace(tmp, final)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def input_json(inputs) -> str:
    import numpy as np

    return json.dumps({"input_data": [np.asarray(a, dtype=np.float64).reshape(-1).tolist() for a in inputs]})


def canonical_settings(settings: dict) -> dict:
    """Settings without what varies between identical runs of ezkl 23.0.5: the timestamp, and the
    order of `required_range_checks` (a hash set inside ezkl, listed in random order)."""
    s = dict(settings)
    s.pop("timestamp", None)
    if isinstance(s.get("required_range_checks"), list):
        s["required_range_checks"] = sorted(s["required_range_checks"])
    return s


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(canonical_settings(settings), sort_keys=True).encode()).hexdigest()


@contextmanager
def _ezkl_quiet():
    """ezkl prints scale advice ("High scale values (>20) may impact performance") from Rust
    straight to the process's stdout/stderr when it reads these settings; keep it out of ours."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def write_settings(onnx_path: Path, out: Path, shape: CircuitShape, part: str, logrows: int) -> dict:
    """ezkl settings for one part at `logrows`, from the shape alone (no data): the circuits have
    no lookups, so nothing in them depends on the weights. Written in canonical order so the
    compiled circuit, and hence the keys, are the same on every machine."""
    import ezkl

    ra = run_args(shape, part)
    ra.logrows = logrows
    ra.lookup_range = (0, 0)
    with _ezkl_quiet():
        ezkl.gen_settings(str(onnx_path), str(out), py_run_args=ra)
    s = canonical_settings(json.loads(out.read_text()))
    out.write_text(json.dumps(s))
    return s


def logrows_for(shape: CircuitShape) -> int:
    """The one logrows of both parts: the smallest 2^k holding the larger one's rows. Cached."""
    pointer = cache_dir() / "circuits" / f"{shape.key()}.logrows"
    if pointer.is_file():
        return int(pointer.read_text())
    check_fits(shape)
    import onnx

    from circuits.graph import BUILDERS

    tmp = _atomic_folder(pointer)
    try:
        rows = 0
        for part in PARTS:
            onnx.save(BUILDERS[part](shape), str(tmp / f"{part}.onnx"))
            settings = write_settings(tmp / f"{part}.onnx", tmp / f"{part}.json", shape, part, max_logrows())
            rows = max(rows, int(settings["num_rows"]))
        logrows = max(rows + ROW_RESERVE, 2 * shape.decomp_base).bit_length()
        if logrows > max_logrows():
            raise ZkfpError(f"this model's fingerprint circuit needs 2^{logrows} rows; this machine proves "
                            f"circuits up to 2^{max_logrows()} rows")
        (tmp / "logrows").write_text(str(logrows))
        os.replace(tmp / "logrows", pointer)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return logrows


def build(shape: CircuitShape, part: str, logrows: int | None = None) -> Circuit:
    """One compiled part of the fingerprint circuit at `logrows` (the shape's own when not given).
    Cached."""
    if logrows is None:
        logrows = logrows_for(shape)
    if not 1 <= logrows <= max_logrows():
        raise ZkfpError(f"logrows {logrows} is outside what this machine builds (1..{max_logrows()})")
    final = cache_dir() / "circuits" / f"{shape.key()}-{part}-k{logrows}"
    if (final / "model.compiled").is_file():
        return Circuit(shape, part, final)
    check_fits(shape)
    import ezkl
    import onnx

    from circuits.graph import BUILDERS

    tmp = _atomic_folder(final)
    try:
        c = Circuit(shape, part, tmp)
        onnx.save(BUILDERS[part](shape), str(c.onnx))
        write_settings(c.onnx, c.settings, shape, part, logrows)
        with _ezkl_quiet():
            ezkl.compile_circuit(str(c.onnx), str(c.compiled), str(c.settings))
        (tmp / "shape.json").write_text(json.dumps(shape.to_json(), indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, final)
    return Circuit(shape, part, final)


def keys_folder(circuit: Circuit, srs: SrsInfo) -> Path:
    return cache_dir() / "keys" / f"{circuit.folder.name}-{srs.sha256[:16]}"


def keys(circuit: Circuit, srs: SrsInfo) -> Keys:
    """Proving and verification keys for this circuit and SRS; cached."""
    final = keys_folder(circuit, srs)
    if (final / "vk.key").is_file() and (final / "pk.key").is_file():
        return Keys(final)
    import ezkl

    tmp = _atomic_folder(final)
    try:
        ezkl.setup(str(circuit.compiled), str(tmp / "vk.key"), str(tmp / "pk.key"), srs_path=str(srs.path))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, final)
    return Keys(final)
