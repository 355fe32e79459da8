"""The circuit compiled with ezkl: its ONNX graph, settings, compile, setup, and the cache keyed by shape.

The fingerprint is proved by the circuits of a plan (circuits.plan): terms chunks, sums and the
encoder. All use one logrows (they share committed tensors, and a commitment depends on
logrows): for a model that fits one terms circuit, the smallest that holds it and the encoder;
for larger models the spec's CHUNK_LOGROWS. It follows from the shape alone (no lookups, so
nothing depends on the data), so prover, verifier and `zkfp commit` all derive the same.

Cache layout (root: $ZKFP_CACHE or ~/.cache/zkfp):
  circuits/<shape key>.logrows                     the shape's logrows
  rows/<part key>.json                             a part's row count (ezkl's gen_settings)
  circuits/<part key>-<kind>-k<logrows>/           network.onnx, settings.json, model.compiled, part.json
  keys/<part key>-<kind>-k<logrows>-<srs sha256[:16]>/   vk.key, pk.key (a verifier keeps no pk.key;
                                                   proving keys beyond $ZKFP_KEYS_MAX_GB are trimmed)
A second release of the same shape skips export, compile and setup; chunks of one kind share them. Nothing here imports
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
from dataclasses import dataclass
from pathlib import Path

from circuits.plan import Part
from circuits.spec import CHUNK_LOGROWS, DECOMP_BASE, CircuitShape
from circuits.srs import SrsInfo, cache_dir
from zkfp.errors import ZkfpError

REBASE_MULTIPLIER = 6  # rescale only values above 6·input_scale: intermediates are never rescaled
KEYS_MAX_GB = 32  # older proving keys kept beside the current plan's own ($ZKFP_KEYS_MAX_GB)
PROVE_BYTES_PER_ROW = 30_000  # peak prover memory per circuit row, measured (see max_logrows)


ROW_RESERVE = 1024  # rows kept free below 2^logrows (ezkl's blinding rows and more)


@dataclass(frozen=True)
class Circuit:
    part: Part
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


def logrows_floor(decomp_base: int = DECOMP_BASE) -> int:
    """The least logrows any circuit gets: ezkl's decomposition needs more than 2·decomp_base rows."""
    return (2 * decomp_base).bit_length()


def check_fits(logrows: int, limit: int | None = None) -> None:
    """Refuse, before any work, circuits too large for this machine's memory."""
    limit = max_logrows() if limit is None else limit
    if logrows > limit:
        smaller = (f": prove it in smaller chunks (zkfp prove --chunk-rows {(1 << limit) - ROW_RESERVE:,})"
                   if limit >= logrows_floor() else "")
        raise ZkfpError(
            f"this model's circuits have 2^{logrows} rows, about {(PROVE_BYTES_PER_ROW << logrows) / 1e9:.1f} GB "
            f"each to prove (30 KB per row, measured); this machine's memory proves circuits up to 2^{limit} rows"
            + smaller)


def run_args(part: Part):
    """ezkl's run arguments of one circuit. Inputs are committed (polycommit) and bound by the
    verifier's own commitments or by the links between circuits, so they are not range-checked
    (README, "Why committed inputs are not range-checked"); terms and sums leave their circuit
    committed, the encoder's values are public."""
    import ezkl

    shape = part.shape
    ra = ezkl.PyRunArgs()
    ra.input_visibility = "polycommit"
    ra.param_visibility = "fixed"
    ra.decomp_base = shape.decomp_base
    ra.ignore_range_check_inputs_outputs = True
    if part.kind == "terms":
        ra.output_visibility = "polycommit"
        ra.input_scale, ra.param_scale = shape.input_scale, shape.param_scale
        ra.scale_rebase_multiplier = REBASE_MULTIPLIER
        ra.decomp_legs, ra.num_inner_cols = shape.decomp_legs, shape.num_inner_cols
    else:  # sum, encoder: the committed terms read at the encoder's scale
        ra.output_visibility = "polycommit" if part.kind == "sum" else "public"
        ra.input_scale, ra.param_scale = shape.enc_input_scale, shape.enc_param_scale
        ra.scale_rebase_multiplier = 1  # everything back at the input scale after each product
        ra.decomp_legs, ra.num_inner_cols = shape.enc_decomp_legs, shape.enc_inner_cols
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


def write_settings(onnx_path: Path, out: Path, part: Part, logrows: int) -> dict:
    """ezkl settings for one circuit at `logrows`, from the shape alone (no data): the circuits have
    no lookups, so nothing in them depends on the weights. Written in canonical order so the
    compiled circuit, and hence the keys, are the same on every machine."""
    import ezkl

    ra = run_args(part)
    ra.logrows = logrows
    ra.lookup_range = (0, 0)
    with _ezkl_quiet():
        ezkl.gen_settings(str(onnx_path), str(out), py_run_args=ra)
    s = canonical_settings(json.loads(out.read_text()))
    out.write_text(json.dumps(s))
    return s


def part_rows(part: Part) -> int:
    """ezkl's row count of one circuit (gen_settings on its graph; cached)."""
    cached = cache_dir() / "rows" / f"{part.key()}.json"
    if cached.is_file():
        return int(json.loads(cached.read_text())["num_rows"])
    import onnx

    from circuits.graph import build_part

    tmp = _atomic_folder(cached)
    try:
        onnx.save(build_part(part), str(tmp / "network.onnx"))
        rows = int(write_settings(tmp / "network.onnx", tmp / "settings.json", part, max_logrows())["num_rows"])
        (tmp / "rows.json").write_text(json.dumps({"num_rows": rows}))
        os.replace(tmp / "rows.json", cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def fits(part: Part, budget: int) -> bool:
    """Whether a circuit holds within `budget` rows; parts far beyond it (by the shape's estimate)
    are not laid out by ezkl at all."""
    if part.kind == "terms" and part.shape.estimate_rows() > 2 * budget:
        return False
    return part_rows(part) <= budget


def logrows_for(shape: CircuitShape) -> int:
    """The model's logrows: the smallest 2^k holding its whole terms circuit and the encoder when
    both fit CHUNK_LOGROWS, else CHUNK_LOGROWS (chunks, and encoders by groups of layers). Cached."""
    pointer = cache_dir() / "circuits" / f"{shape.key()}.logrows"
    if pointer.is_file():
        return int(pointer.read_text())
    whole = Part("terms", shape)
    encoder = Part("encoder", shape, (tuple(range(shape.n_terms())),))
    budget = (1 << CHUNK_LOGROWS) - ROW_RESERVE
    if fits(whole, budget) and fits(encoder, budget):
        rows = max(part_rows(whole), part_rows(encoder))
        logrows = max((rows + ROW_RESERVE).bit_length(), logrows_floor(shape.decomp_base))
    else:
        logrows = CHUNK_LOGROWS
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}")
    tmp.write_text(str(logrows))
    os.replace(tmp, pointer)
    return logrows


def plan_logrows(shape: CircuitShape, chunk_rows: int | None = None) -> int:
    """The logrows of a plan: the shape's (`logrows_for`), or for a smaller row budget per chunk
    the smallest 2^k that holds it. A smaller budget is asked for to prove in less memory, and a
    proof's memory follows 2^logrows, not the rows its circuit fills. A pure function of the shape
    and the budget, as the plan is: prover, verifier and `zkfp commit` agree on it."""
    logrows = logrows_for(shape)
    if chunk_rows is None:
        return logrows
    if not 0 < chunk_rows <= (1 << logrows) - ROW_RESERVE:
        raise ValueError(f"a row budget per chunk must be between 1 and {(1 << logrows) - ROW_RESERVE:,} for this "
                         f"model (its circuit's 2^{logrows} rows less ezkl's reserve), not {chunk_rows:,}")
    fitting = (chunk_rows + ROW_RESERVE - 1).bit_length()  # the least k with chunk_rows ≤ 2^k − reserve
    return min(logrows, max(fitting, logrows_floor(shape.decomp_base)))


def build(part: Part, logrows: int) -> Circuit:
    """One compiled circuit at `logrows`. Cached."""
    check_fits(logrows)
    final = cache_dir() / "circuits" / circuit_name(part, logrows)
    if (final / "model.compiled").is_file():
        return Circuit(part, final)
    import ezkl
    import onnx

    from circuits.graph import build_part

    tmp = _atomic_folder(final)
    try:
        c = Circuit(part, tmp)
        onnx.save(build_part(part), str(c.onnx))
        write_settings(c.onnx, c.settings, part, logrows)
        with _ezkl_quiet():
            ezkl.compile_circuit(str(c.onnx), str(c.compiled), str(c.settings))
        (tmp / "part.json").write_text(json.dumps(part.to_json(), indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, final)
    return Circuit(part, final)


def circuit_name(part: Part, logrows: int) -> str:
    """The cache name of a part's circuit at `logrows` (its folder, and its keys' with the SRS)."""
    return f"{part.key()}-{part.kind}-k{logrows}"


def keys_folder(circuit: Circuit, srs: SrsInfo) -> Path:
    return keys_folder_of(circuit.folder.name, srs)


def keys_folder_of(name: str, srs: SrsInfo) -> Path:
    """Where the keys of the circuit named `name` (`circuit_name`) live, built or not."""
    return cache_dir() / "keys" / f"{name}-{srs.sha256[:16]}"


def keys(circuit: Circuit, srs: SrsInfo) -> Keys:
    """Proving and verification keys for this circuit and SRS; cached (`trim_keys` bounds the cache)."""
    final = keys_folder(circuit, srs)
    if not (final / "pk.key").is_file():
        _setup(circuit, srs, final, keep_pk=True)
    os.utime(final)  # its last use: trim_keys drops the least recently used proving keys first
    return Keys(final)


def vk(circuit: Circuit, srs: SrsInfo) -> Path:
    """The verification key alone: what a verifier derives. The proving key (over 1 GB at 2^17)
    is not kept."""
    final = keys_folder(circuit, srs)
    if not (final / "vk.key").is_file():
        _setup(circuit, srs, final, keep_pk=False)
    return final / "vk.key"


def _setup(circuit: Circuit, srs: SrsInfo, final: Path, keep_pk: bool) -> None:
    import ezkl

    tmp = _atomic_folder(final)
    try:
        ezkl.setup(str(circuit.compiled), str(tmp / "vk.key"), str(tmp / "pk.key"), srs_path=str(srs.path))
        if not keep_pk:
            (tmp / "pk.key").unlink()
        if (final / "vk.key").is_file():
            # an entry without its proving key (a verifier's, or trimmed): setup is deterministic,
            # so the key pair just derived completes it; each file is replaced atomically
            for name in ("vk.key", "pk.key"):
                if (tmp / name).is_file():
                    os.replace(tmp / name, final / name)
            shutil.rmtree(tmp, ignore_errors=True)
            return
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, final)


def keys_max_bytes() -> int:
    raw = os.environ.get("ZKFP_KEYS_MAX_GB", str(KEYS_MAX_GB))
    try:
        return int(float(raw) * 2**30)
    except ValueError:
        raise ZkfpError(f"ZKFP_KEYS_MAX_GB must be a number of GiB, not {raw!r}") from None


def trim_keys(max_bytes: int, keep: set[Path] = frozenset()) -> list[Path]:
    """Delete cached proving keys, least recently used first, until those left take at most
    `max_bytes` (those in `keep` are never deleted). Verification keys stay: they are small and
    all a verifier needs. Returns the folders whose proving key was deleted."""
    held = []
    for folder in (cache_dir() / "keys").glob("*"):
        pk = folder / "pk.key"
        if pk.is_file() and not folder.name.startswith("."):
            held.append((folder.stat().st_mtime, folder, pk.stat().st_size))
    total, dropped = sum(size for _, _, size in held), []
    for _, folder, size in sorted(held):
        if total <= max_bytes:
            break
        if folder in keep:
            continue
        (folder / "pk.key").unlink(missing_ok=True)
        total -= size
        dropped.append(folder)
    return dropped
