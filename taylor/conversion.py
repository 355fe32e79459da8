"""Protect a checkpoint: calibrate the MLP pre-activations, then stream the conversion layer by layer.

Calibration (taylor.calibration) runs the model one block at a time over calibration tokens and
records, per neuron, the min and max of the MLP pre-activation (gate projection, or first
projection plus bias). Conversion then reads one block at a time from the safetensors files,
expands the narrow-range neurons around the midpoint of their range, and writes that block's
release file, so the peak memory of both is about one block plus its output, not the model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from zkfp.architectures import CAUSAL_FAMILIES, ModelReader, detect
from zkfp.checkpoint import Checkpoint
from zkfp.errors import ZkfpError
from zkfp.files import atomic_output_dir, sha256_file, write_json

from taylor import jets
from taylor.calibration import Calibration, calibrate  # noqa: F401 (Calibration re-exported for callers)
from taylor.release import (BASE_FILE, FORMAT, FORMAT_VERSION, MANIFEST, MAX_TERMS, SIDE_FILES, MlpLayout,
                            layer_file, mlp_key)
from taylor.shard_writer import DTYPE_NAMES, Streamed, save_streamed

if TYPE_CHECKING:
    from taylor.throttle import Throttle

DEFAULT_TERMS = 12  # smallest even N with 100% greedy agreement on both MLP families (benchmarks/taylor_fidelity.py)
DEFAULT_FRACTION = 10000 / 14336  # the official code's Llama-3-8B setting, ≈ 0.70
# From hidden 1024 up, the default release aims for a measured 4× (TaylorMLP reports > 4× with
# exact tokens); N = DEFAULT_TERMS gives ≈ 2.5× there (README "Throttle as a target"). Below it a
# token's cost is mostly Python overhead, which no N changes much (1.46× at N = 12 on tiny models).
DEFAULT_SLOWDOWN = 4.0
THROTTLE_MIN_HIDDEN = 1024
# With certify=True a neuron is expanded only if its series is certified on its calibrated range
# widened by CERTIFY_MARGIN × the width on each side: within the guard radius and within
# CERTIFY_TOL of the activation. Off by default: on an untrained hidden-1024 Llama with
# random-id calibration it certifies 0 % of the neurons at N = 12 (2 % at N = 20), i.e. no
# throttle; on tiny trained models 82-86 % (Llama), 59-90 % (GPT-2) per block. A margin of 0.5
# certified 0-6 % of the trained Llama's neurons.
CERTIFY_MARGIN = 0.0
CERTIFY_TOL = 1e-4

def check_terms(n_terms: int) -> int:
    if not isinstance(n_terms, int) or n_terms < 1:
        raise ZkfpError(f"--terms must be an integer ≥ 1 (got {n_terms!r})")
    if n_terms > MAX_TERMS:
        raise ZkfpError(
            f"--terms {n_terms} is too large (max {MAX_TERMS}): each term adds a full down-projection-sized "
            f"matrix to the release and to every token's compute, and beyond ~16 terms the fp32 evaluation "
            f"no longer gains accuracy"
        )
    return n_terms


def check_fraction(fraction: float) -> float:
    if not 0.0 <= fraction <= 1.0:
        raise ZkfpError(f"expanded fraction must be within [0, 1] (got {fraction})")
    return float(fraction)


# ---------------------------------------------------------------------------------------------
# Conversion


def certified(activation: str, minimum: np.ndarray, maximum: np.ndarray, n_terms: int,
              margin: float = CERTIFY_MARGIN, tol: float = CERTIFY_TOL) -> np.ndarray:
    """Per neuron, whether its N-term series about the midpoint of the calibrated range, widened
    by `margin` × the range's width on each side, stays within the guard radius and within `tol`
    of the exact activation everywhere on that widened range (checked on a grid, fp64)."""
    lo, hi = minimum.astype(np.float64), maximum.astype(np.float64)
    center = (lo + hi) / 2
    half = (hi - lo) / 2 * (1 + 2 * margin)
    inside_guard = half <= jets.GUARD_SCALE * jets.convergence_radius(activation, center)
    delta = np.linspace(-1.0, 1.0, 33)[:, None] * half
    coeff = jets.activation_jet(activation, center, n_terms)
    series = np.zeros_like(delta)
    for c in coeff[::-1]:  # Horner
        series = series * delta + c
    exact = jets.activation_jet(activation, center + delta, 0)[0]
    return inside_guard & (np.abs(series - exact).max(axis=0) <= tol)


def select_expanded(minimum: np.ndarray, maximum: np.ndarray, fraction: float,
                    eligible: np.ndarray | None = None) -> np.ndarray:
    """The round(fraction·I) neurons with the smallest calibrated range among the `eligible`
    ones (all by default; fewer if fewer are eligible), as ascending indices."""
    count = int(round(fraction * minimum.size))
    order = np.argsort(maximum.astype(np.float64) - minimum.astype(np.float64), kind="stable")
    if eligible is not None:
        order = order[eligible[order]]
    return np.sort(order[:count])


def _theta_orders(down_s: torch.Tensor, coeff: np.ndarray):
    """Θ_n = W_down[:, S] · act^{(n)}/n!, one order at a time (products in fp64, stored fp32), so a
    block's Θ is never whole in memory (taylor.shard_writer)."""
    def orders():
        wide = down_s.double()
        for c in coeff:
            yield (wide * torch.from_numpy(c)).float().unsqueeze(0)
    return orders


def _canonical(name: str, prefix: str, family) -> str:
    """Checkpoint name → the causal-LM model's state-dict name (a checkpoint may omit the base prefix)."""
    want = family.base_prefixes[0]
    if prefix == want or not name.startswith(prefix):
        return name
    return want + name[len(prefix):]


def _split_names(ckpt: Checkpoint, reader: ModelReader, layers: int) -> tuple[list[str], dict[int, list[str]]]:
    """The tensors copied as they are: those of no block (the base file), and each block's
    except its MLP projections (which the Taylor form replaces)."""
    fam = reader.family
    mlp_roles = [r for r in (fam.gate, fam.up, fam.down) if r]
    mlp_names = {reader.key(f"{r}.{p}", i) for i in range(layers) for r in mlp_roles for p in ("weight", "bias")}
    base: list[str] = []
    per_layer: dict[int, list[str]] = {i: [] for i in range(layers)}
    for name in ckpt.names:
        if name in mlp_names:
            continue
        layer = next((i for i in range(layers) if name.startswith(reader.key("", i))), None)
        (base if layer is None else per_layer[layer]).append(name)
    return base, per_layer


def _taylor_mlp(reader: ModelReader, ckpt: Checkpoint, layout: MlpLayout, calib: Calibration, i: int,
                n_terms: int, fraction: float, certify: bool) -> tuple[dict, np.ndarray, torch.dtype]:
    """Block i's MLP in Taylor form (TaylorMLP, eq. 3: Θ_n = W_down[:, S]·σ⁽ⁿ⁾(t)/n! for the
    expanded neurons S, the other neurons kept exact): its tensors by short name, S, and the
    source dtype."""
    fam, activation = reader.family, reader.arch.activation
    w_in = reader.linear(fam.gate or fam.up, i)
    w_down = reader.linear(fam.down, i)
    w_up = reader.linear(fam.up, i) if layout.gated else None
    ckpt.close()  # this block's tensors are copied out: unmap its shard, whose pages count in RSS
    lo, hi = calib.minimum[i], calib.maximum[i]
    eligible = certified(activation, lo, hi, n_terms) if certify else None
    expanded = select_expanded(lo, hi, fraction, eligible)
    exact = np.setdiff1d(np.arange(lo.size), expanded)
    s_idx, f_idx = torch.from_numpy(expanded), torch.from_numpy(exact)
    t = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2)[expanded]  # anchor of the activation's argument
    bias = None if w_in.bias is None else w_in.bias.double().numpy()[expanded]
    z0 = t if bias is None else t - bias
    coeff = jets.activation_jet(activation, t, n_terms)  # (N+1, |S|) fp64
    theta = Streamed((n_terms + 1, reader.arch.dims.hidden, expanded.size), torch.float32,
                     _theta_orders(w_down.weight[:, s_idx], coeff))
    radius = jets.GUARD_SCALE * jets.convergence_radius(activation, t)
    mlp = {"in_weight": w_in.weight[s_idx], "anchor": torch.from_numpy(z0).float(), "coeffs": theta,
           "guard_radius": torch.from_numpy(radius).float(),
           "exact_in_weight": w_in.weight[f_idx], "exact_down_weight": w_down.weight[:, f_idx]}
    if layout.gated:
        mlp["up_weight"], mlp["exact_up_weight"] = w_up.weight[s_idx], w_up.weight[f_idx]
    if layout.in_bias:
        mlp["exact_in_bias"] = w_in.bias[f_idx]
    if layout.down_bias:
        mlp["down_bias"] = w_down.bias
    return mlp, expanded, w_in.weight.dtype


def _manifest(ckpt: Checkpoint, reader: ModelReader, calib: Calibration, layout: MlpLayout, n_terms: int,
              fraction: float, certify: bool, throttle: "Throttle | None", dtypes_seen: set[str],
              layers_info: list[dict], tensors: dict[str, dict], files: dict[str, dict]) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": {"architecture": (ckpt.config.get("architectures") or [None])[0],
                   "model_type": ckpt.config.get("model_type"), "family": reader.family.name, "config": ckpt.config},
        "activation": reader.arch.activation,
        "n_terms": n_terms,
        "expanded_fraction": fraction,
        "throttle": None if throttle is None else throttle.to_json(),
        "guard": {"order": jets.GUARD_ORDER, "radius_scale": jets.GUARD_SCALE,
                  "rule": "orders above `order` are zeroed where |delta| > guard_radius"},
        "calibration": {"source": calib.source, "tokens": calib.tokens,
                        "anchor": "midpoint of per-neuron min/max",
                        "selection": "smallest ranges" + (" among the certified neurons" if certify else "")
                                     + " expanded",
                        "certified": None if not certify else {
                            "margin": CERTIFY_MARGIN, "tol": CERTIFY_TOL,
                            "rule": "N-term series within tol of the activation and within the guard radius "
                                    "on [min, max] widened by margin x width each side"}},
        "mlp_layout": {"gated": layout.gated, "in_bias": layout.in_bias, "down_bias": layout.down_bias},
        "dtypes": {"source_weights": sorted(dtypes_seen), "coeffs": "F32", "anchor": "F32", "guard_radius": "F32"},
        "layers": layers_info,
        "tensors": tensors,
        "files": files,
    }


def convert(model_dir: str | os.PathLike, out: str | os.PathLike, calib: Calibration, *,
            n_terms: int = DEFAULT_TERMS, fraction: float = DEFAULT_FRACTION, force: bool = False,
            certify: bool = False, throttle: "Throttle | None" = None) -> Path:
    """Write the release, one block at a time (see taylor.release for the format). `certify`:
    expand only neurons whose series is certified on their calibrated range (`certified`).
    `throttle`: the slowdown target this (N, fraction) was chosen for, recorded in the manifest."""
    check_terms(n_terms)
    check_fraction(fraction)
    ckpt = Checkpoint(model_dir)
    reader = ModelReader(ckpt, CAUSAL_FAMILIES)
    fam, d = reader.family, reader.arch.dims
    if len(calib.minimum) != d.layers or any(m.shape != (d.intermediate,) for m in calib.minimum):
        raise ZkfpError("calibration statistics do not match the model's layers / intermediate size")
    base, per_layer = _split_names(ckpt, reader, d.layers)
    layout = MlpLayout(gated=fam.gate is not None, in_bias=reader.linear(fam.gate or fam.up, 0).bias is not None,
                       down_bias=reader.linear(fam.down, 0).bias is not None)
    tensors: dict[str, dict] = {}
    layers_info: list[dict] = []
    dtypes_seen: set[str] = set()

    def write(folder: Path, file_name: str, tensors_out: dict[str, "torch.Tensor | Streamed"]) -> None:
        for k, t in tensors_out.items():
            tensors[k] = {"file": file_name, "shape": list(t.shape), "dtype": DTYPE_NAMES[t.dtype]}
        save_streamed(tensors_out, folder / file_name)

    with atomic_output_dir(out, force=force) as tmp:
        for i in range(d.layers):
            block = {_canonical(n, reader.prefix, fam): ckpt.get(n) for n in per_layer[i]}
            mlp, expanded, src_dtype = _taylor_mlp(reader, ckpt, layout, calib, i, n_terms, fraction, certify)
            dtypes_seen.add(DTYPE_NAMES[src_dtype])
            block.update({mlp_key(i, k): v for k, v in mlp.items()})
            write(tmp, layer_file(i), block)
            layers_info.append({"index": i, "file": layer_file(i), "expanded": expanded.tolist()})
            del block, mlp
        write(tmp, BASE_FILE, {_canonical(n, reader.prefix, fam): ckpt.get(n) for n in base})
        for side in SIDE_FILES:
            if (Path(model_dir) / side).is_file():
                shutil.copyfile(Path(model_dir) / side, tmp / side)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
        write_json(tmp / MANIFEST, _manifest(ckpt, reader, calib, layout, n_terms, fraction, certify, throttle,
                                             dtypes_seen, layers_info, tensors, files))
    return Path(out)


def default_slowdown(config: dict) -> float | None:
    """The slowdown a release of this config aims for when neither N nor a target is given:
    DEFAULT_SLOWDOWN at hidden ≥ THROTTLE_MIN_HIDDEN, else None (N = DEFAULT_TERMS)."""
    hidden = detect(config, CAUSAL_FAMILIES).dims.hidden
    return DEFAULT_SLOWDOWN if hidden >= THROTTLE_MIN_HIDDEN else None


def protect(model_dir: str | os.PathLike, out: str | os.PathLike, *, n_terms: int | None = None,
            calibration: str | os.PathLike | None = None, fraction: float = DEFAULT_FRACTION,
            slowdown: float | None = None, force: bool = False, certify: bool = False) -> Path:
    """Calibrate and convert `model_dir` into a Taylor release at `out` (all-or-nothing).

    With `slowdown`, N and the expanded fraction are chosen (taylor.throttle.choose, `fraction`
    then being the ceiling) so that the slowdown measured on the checkpoint's shape reaches it.
    With neither `n_terms` nor `slowdown`, a model of hidden size ≥ THROTTLE_MIN_HIDDEN aims for
    DEFAULT_SLOWDOWN (the nearest N = MAX_TERMS gets, if it falls short) and a smaller one gets
    N = DEFAULT_TERMS. The choice and its measured figure go into the manifest."""
    if n_terms is not None and slowdown is not None:
        raise ZkfpError("--slowdown chooses N itself: pass --slowdown or --terms, not both")
    n_given = n_terms is not None
    n_terms = check_terms(n_terms if n_given else DEFAULT_TERMS)
    check_fraction(fraction)
    out = Path(out)
    if out.exists() and not force:
        raise ZkfpError(f"output exists: {out} (pass --force to replace it)")
    config = Checkpoint(model_dir).config
    strict = slowdown is not None
    if not n_given and slowdown is None and not certify:
        slowdown = default_slowdown(config)
    throttle = None
    if slowdown is not None:
        if certify:
            raise ZkfpError("--slowdown cannot be combined with certification, which decides each block's "
                            "expanded neurons after the throttle is chosen")
        from taylor.throttle import choose

        throttle = choose(config, slowdown, fraction_ceiling=fraction, strict=strict)
        n_terms, fraction = throttle.n_terms, throttle.fraction
    calib = calibrate(model_dir, calibration)
    return convert(model_dir, out, calib, n_terms=n_terms, fraction=fraction, force=force, certify=certify,
                   throttle=throttle)
