"""ONNX export, ezkl settings/compile/setup, and the cache keyed by circuit shape.

Cache layout (root: $ZKFP_CACHE or ~/.cache/zkfp):
  circuits/<shape key>/   network.onnx, settings.json, model.compiled, shape.json
  keys/<shape key>-<srs sha256[:16]>/   vk.key, pk.key
A second release of the same shape skips export, calibration, compile and setup.
Every entry is written to a temporary folder and renamed into place, so a crash never leaves
a half-built entry behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from circuits.spec import MAX_LOGROWS, CircuitShape
from circuits.srs import SrsInfo, cache_dir
from zkfp.errors import ZkfpError

REBASE_MULTIPLIER = 6  # rescale only values above 6·input_scale: intermediates are never rescaled


@dataclass(frozen=True)
class Circuit:
    shape: CircuitShape
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


def check_fits(shape: CircuitShape) -> None:
    """Refuse, before any work, a circuit too large for this machine, saying what fits."""
    k = shape.estimate_logrows()
    if k <= MAX_LOGROWS:
        return
    budget = (1 << MAX_LOGROWS) * shape.num_inner_cols
    raise ZkfpError(
        f"this model needs a circuit of about 2^{k} rows (~{shape.estimate_rows():,} rows, "
        f"{shape.weight_elements():,} committed weight elements); one circuit on this machine fits "
        f"logrows ≤ {MAX_LOGROWS} (~{budget // 2:,} committed elements at k={shape.k} tokens, i.e. "
        f"roughly hidden ≤ 512 with intermediate ≤ 1408 for the last {len(shape.layers)} layers). "
        f"Use fewer tokens or layers; chunked circuits are not implemented yet."
    )


def run_args(shape: CircuitShape):
    import ezkl

    ra = ezkl.PyRunArgs()
    ra.input_visibility = "polycommit"
    ra.param_visibility = "fixed"
    ra.output_visibility = "public"
    ra.input_scale = shape.input_scale
    ra.param_scale = shape.param_scale
    ra.scale_rebase_multiplier = REBASE_MULTIPLIER
    ra.decomp_base = shape.decomp_base
    ra.decomp_legs = shape.decomp_legs
    ra.num_inner_cols = shape.num_inner_cols
    # Inputs are bound by the verifier's own commitments, outputs are public: no range checks.
    ra.ignore_range_check_inputs_outputs = True
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


def flat_input(inputs):
    import numpy as np

    return np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1) for a in inputs]).astype(np.float64)


def build(shape: CircuitShape, inputs, progress=None) -> Circuit:
    """Export, calibrate (once, on these inputs, at the fixed scales) and compile; cached."""
    final = cache_dir() / "circuits" / shape.key()
    if (final / "model.compiled").is_file():
        return Circuit(shape, final)
    check_fits(shape)
    import ezkl
    import torch

    from circuits.model import FingerprintCircuit

    tmp = _atomic_folder(final)
    try:
        c = Circuit(shape, tmp)
        mod = FingerprintCircuit(shape).eval()
        with torch.no_grad():
            names = [n for n, _ in shape.input_specs()]
            torch.onnx.export(mod, tuple(torch.from_numpy(a) for a in inputs), str(c.onnx),
                              input_names=names, output_names=["terms"], opset_version=17, dynamo=False)
        if progress:
            progress("settings")
        ezkl.gen_settings(str(c.onnx), str(c.settings), py_run_args=run_args(shape))
        data = tmp / "calibration.json"
        data.write_text(input_json(inputs))
        ezkl.calibrate_settings(str(data), str(c.onnx), str(c.settings), "resources",
                                scales=[shape.input_scale], scale_rebase_multiplier=[REBASE_MULTIPLIER],
                                max_logrows=MAX_LOGROWS)
        data.unlink()
        if progress:
            progress("compile")
        ezkl.compile_circuit(str(c.onnx), str(c.compiled), str(c.settings))
        (tmp / "shape.json").write_text(json.dumps(shape.to_json(), indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, final)
    return Circuit(shape, final)


def keys(circuit: Circuit, srs: SrsInfo) -> Keys:
    """Proving and verification keys for this circuit and SRS; cached."""
    final = cache_dir() / "keys" / f"{circuit.shape.key()}-{srs.sha256[:16]}"
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
