"""Protect a checkpoint: calibrate the MLP pre-activations, then stream the conversion layer by layer.

Calibration runs the model (loaded with transformers) over calibration tokens and records,
per neuron, the min and max of the MLP pre-activation (gate projection, or first projection
plus bias). Conversion then reads one block at a time from the safetensors files, expands the
narrow-range neurons around the midpoint of their range, and writes that block's release file,
so its peak memory is about one block plus its output, not the model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zkfp.architectures import CAUSAL_FAMILIES, ModelReader, detect
from zkfp.checkpoint import Checkpoint
from zkfp.errors import CheckpointError, ZkfpError
from zkfp.files import atomic_output_dir, sha256_file, write_json

from taylor import jets
from taylor.release import (BASE_FILE, FORMAT, FORMAT_VERSION, MANIFEST, MAX_TERMS, SIDE_FILES, MlpLayout,
                            layer_file, mlp_key)

DEFAULT_TERMS = 12  # smallest even N with 100% greedy agreement on both MLP families (benchmarks/taylor_fidelity.py)
DEFAULT_FRACTION = 10000 / 14336  # the official code's Llama-3-8B setting, ≈ 0.70
CALIB_SEQ_LEN = 128
CALIB_MAX_TOKENS = 16384
BUILTIN_SENTENCES = 600

_ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
             torch.int64: "I64"}


@dataclass
class Calibration:
    """Per-layer, per-neuron min and max of the MLP pre-activation (bias included), fp32."""

    minimum: list[np.ndarray]
    maximum: list[np.ndarray]
    tokens: int
    source: str
    extra: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, minimum=np.stack(self.minimum), maximum=np.stack(self.maximum),
                 meta=np.array(json.dumps({"tokens": self.tokens, "source": self.source})))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Calibration":
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(list(data["minimum"]), list(data["maximum"]), meta["tokens"], meta["source"])


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
# Calibration


def calibration_tokens(model_dir: str | os.PathLike, calibration: str | os.PathLike | None,
                       vocab_size: int, max_tokens: int = CALIB_MAX_TOKENS) -> tuple[torch.Tensor, str]:
    """Token ids for calibration: a token-id file, a text file (checkpoint's tokenizer), or the built-in corpus."""
    model_dir = Path(model_dir)
    if calibration is None:
        from zkfp.zoo.corpus import DOMAINS, generate

        ids = _tokenize(model_dir, generate(sorted(DOMAINS), n_sentences=BUILTIN_SENTENCES, seed=4242), vocab_size)
        source = "built-in corpus (zkfp.zoo.corpus)"
    else:
        path = Path(calibration)
        if not path.is_file():
            raise ZkfpError(f"calibration file not found: {path}")
        raw = path.read_bytes()
        if not raw.strip():
            raise ZkfpError(f"calibration file is empty: {path}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ZkfpError(f"calibration file is neither UTF-8 text nor token ids: {path}") from None
        ids_list = _parse_ids(text)
        if ids_list is not None:
            if not ids_list:
                raise ZkfpError(f"calibration file holds no token ids: {path}")
            bad = [t for t in ids_list if not 0 <= t < vocab_size]
            if bad:
                raise ZkfpError(f"calibration token id {bad[0]} is outside the vocabulary (size {vocab_size}): {path}")
            ids = torch.tensor(ids_list, dtype=torch.long)
            source = f"token ids from {path.name}"
        else:
            ids = _tokenize(model_dir, text, vocab_size, require_own=True)
            source = f"text from {path.name}"
    if ids.numel() < 2:
        raise ZkfpError("calibration needs at least 2 tokens")
    return ids[:max_tokens], source


def _parse_ids(text: str) -> list[int] | None:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            return None
        flat = [x for row in data for x in (row if isinstance(row, list) else [row])]
        if all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
            return flat
        return None
    parts = stripped.split()
    if parts and all(p.lstrip("-").isdigit() for p in parts):
        return [int(p) for p in parts]
    return None


def _tokenize(model_dir: Path, text: str, vocab_size: int, require_own: bool = False) -> torch.Tensor:
    tokenizer = None
    if any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
        except Exception as exc:  # a broken tokenizer is the checkpoint's problem; say so
            raise CheckpointError(f"cannot load the tokenizer of {model_dir}: {exc}") from None
    if tokenizer is None:
        if require_own:
            raise ZkfpError(f"calibration text needs a tokenizer, and {model_dir} has none; "
                            "give token ids instead (JSON list or whitespace-separated integers)")
        from zkfp.zoo.tokenizer import load_tokenizer  # no tokenizer: the zoo's, ids folded into the vocab

        tokenizer = load_tokenizer()
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    return ids % vocab_size


def _mlp_in_module(family, i: int) -> str:
    return family.base_prefixes[0] + family.layer.format(i=i) + (family.gate or family.up)


def calibrate(model_dir: str | os.PathLike, calibration: str | os.PathLike | None = None,
              max_tokens: int = CALIB_MAX_TOKENS, seq_len: int = CALIB_SEQ_LEN) -> Calibration:
    """Per-neuron min/max of each block's MLP pre-activation over the calibration tokens."""
    from transformers import AutoModelForCausalLM

    ckpt = Checkpoint(model_dir)
    arch = detect(ckpt.config, CAUSAL_FAMILIES)
    ids, source = calibration_tokens(model_dir, calibration, arch.dims.vocab, max_tokens)
    max_pos = ckpt.config.get("max_position_embeddings") or ckpt.config.get("n_positions") or seq_len
    seq_len = max(2, min(seq_len, int(max_pos)))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    n_layers, inter = arch.dims.layers, arch.dims.intermediate
    lo = [torch.full((inter,), float("inf")) for _ in range(n_layers)]
    hi = [torch.full((inter,), float("-inf")) for _ in range(n_layers)]
    hooks = []
    for i in range(n_layers):
        def hook(_module, _inp, out, i=i):
            flat = out.detach().float().reshape(-1, out.shape[-1])
            lo[i] = torch.minimum(lo[i], flat.amin(0))
            hi[i] = torch.maximum(hi[i], flat.amax(0))
        hooks.append(model.get_submodule(_mlp_in_module(arch.family, i)).register_forward_hook(hook))
    try:
        with torch.no_grad():
            chunks = list(ids.split(seq_len))
            for start in range(0, len(chunks), 8):
                batch = chunks[start:start + 8]
                if batch[-1].numel() != seq_len and len(batch) > 1:
                    model(input_ids=torch.stack(batch[:-1]))
                    batch = batch[-1:]
                model(input_ids=torch.stack(batch))
    finally:
        for h in hooks:
            h.remove()
    del model
    return Calibration([x.numpy() for x in lo], [x.numpy() for x in hi], int(ids.numel()), source)


# ---------------------------------------------------------------------------------------------
# Conversion


def select_expanded(minimum: np.ndarray, maximum: np.ndarray, fraction: float) -> np.ndarray:
    """The round(fraction·I) neurons with the smallest calibrated range, as ascending indices."""
    count = int(round(fraction * minimum.size))
    order = np.argsort(maximum.astype(np.float64) - minimum.astype(np.float64), kind="stable")
    return np.sort(order[:count])


def _canonical(name: str, prefix: str, family) -> str:
    """Checkpoint name → the causal-LM model's state-dict name (a checkpoint may omit the base prefix)."""
    want = family.base_prefixes[0]
    if prefix == want or not name.startswith(prefix):
        return name
    return want + name[len(prefix):]


def convert(model_dir: str | os.PathLike, out: str | os.PathLike, calib: Calibration, *,
            n_terms: int = DEFAULT_TERMS, fraction: float = DEFAULT_FRACTION, force: bool = False) -> Path:
    """Write the release, one block at a time (see taylor.release for the format)."""
    from safetensors.torch import save_file

    check_terms(n_terms)
    check_fraction(fraction)
    ckpt = Checkpoint(model_dir)
    reader = ModelReader(ckpt, CAUSAL_FAMILIES)
    arch, fam = reader.arch, reader.family
    d = arch.dims
    if len(calib.minimum) != d.layers or any(m.shape != (d.intermediate,) for m in calib.minimum):
        raise ZkfpError("calibration statistics do not match the model's layers / intermediate size")
    mlp_roles = [r for r in (fam.gate, fam.up, fam.down) if r]
    mlp_names = {reader.key(f"{r}.{p}", i) for i in range(d.layers) for r in mlp_roles for p in ("weight", "bias")}
    per_layer: dict[int, list[str]] = {i: [] for i in range(d.layers)}
    base: list[str] = []
    for name in ckpt.names:
        if name in mlp_names:
            continue
        layer = next((i for i in range(d.layers) if name.startswith(reader.key("", i))), None)
        (base if layer is None else per_layer[layer]).append(name)

    r0 = reader.linear(fam.gate or fam.up, 0)
    layout = MlpLayout(gated=fam.gate is not None, in_bias=r0.bias is not None,
                       down_bias=reader.linear(fam.down, 0).bias is not None)
    del r0
    tensors: dict[str, dict] = {}
    layers_info: list[dict] = []
    dtypes_seen: set[str] = set()

    def write(folder: Path, file_name: str, tensors_out: dict[str, torch.Tensor]) -> None:
        for k, t in tensors_out.items():
            tensors[k] = {"file": file_name, "shape": list(t.shape), "dtype": _ST_DTYPE[t.dtype]}
        save_file({k: t.contiguous() for k, t in tensors_out.items()}, str(folder / file_name))

    with atomic_output_dir(out, force=force) as tmp:
        src_dtype = None
        for i in range(d.layers):
            out_t = {_canonical(n, reader.prefix, fam): ckpt.get(n) for n in per_layer[i]}
            w_in = reader.linear(fam.gate or fam.up, i)
            w_down = reader.linear(fam.down, i)
            src_dtype = w_in.weight.dtype
            dtypes_seen.add(_ST_DTYPE[src_dtype])
            expanded = select_expanded(calib.minimum[i], calib.maximum[i], fraction)
            exact = np.setdiff1d(np.arange(d.intermediate), expanded)
            s_idx, f_idx = torch.from_numpy(expanded), torch.from_numpy(exact)
            center = (calib.minimum[i].astype(np.float64) + calib.maximum[i].astype(np.float64)) / 2
            t = center[expanded]  # anchor of the activation's argument (bias included)
            bias = None if w_in.bias is None else w_in.bias.double().numpy()[expanded]
            z0 = t if bias is None else t - bias
            coeff = jets.activation_jet(arch.activation, t, n_terms)  # (N+1, |S|) fp64
            down_s = w_down.weight[:, s_idx].double()
            theta = torch.empty((n_terms + 1, d.hidden, expanded.size), dtype=torch.float32)
            for n in range(n_terms + 1):
                theta[n] = (down_s * torch.from_numpy(coeff[n])).float()
            del down_s
            radius = jets.GUARD_SCALE * jets.convergence_radius(arch.activation, t)
            mlp = {"in_weight": w_in.weight[s_idx], "anchor": torch.from_numpy(z0).float(), "coeffs": theta,
                   "guard_radius": torch.from_numpy(radius).float(),
                   "exact_in_weight": w_in.weight[f_idx], "exact_down_weight": w_down.weight[:, f_idx]}
            if layout.gated:
                w_up = reader.linear(fam.up, i)
                mlp["up_weight"], mlp["exact_up_weight"] = w_up.weight[s_idx], w_up.weight[f_idx]
            if layout.in_bias:
                mlp["exact_in_bias"] = w_in.bias[f_idx]
            if layout.down_bias:
                mlp["down_bias"] = w_down.bias
            out_t.update({mlp_key(i, k): v for k, v in mlp.items()})
            write(tmp, layer_file(i), out_t)
            layers_info.append({"index": i, "file": layer_file(i), "expanded": expanded.tolist()})
            del out_t, mlp, theta, w_in, w_down
            ckpt.close()  # unmap the shards read so far: their pages would stay in our RSS
        write(tmp, BASE_FILE, {_canonical(n, reader.prefix, fam): ckpt.get(n) for n in base})
        for side in SIDE_FILES:
            if (Path(model_dir) / side).is_file():
                shutil.copyfile(Path(model_dir) / side, tmp / side)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": {"architecture": (ckpt.config.get("architectures") or [None])[0],
                       "model_type": ckpt.config.get("model_type"), "family": fam.name, "config": ckpt.config},
            "activation": arch.activation,
            "n_terms": n_terms,
            "expanded_fraction": fraction,
            "guard": {"order": jets.GUARD_ORDER, "radius_scale": jets.GUARD_SCALE,
                      "rule": "orders above `order` are zeroed where |delta| > guard_radius"},
            "calibration": {"source": calib.source, "tokens": calib.tokens,
                            "anchor": "midpoint of per-neuron min/max", "selection": "smallest ranges expanded"},
            "mlp_layout": {"gated": layout.gated, "in_bias": layout.in_bias, "down_bias": layout.down_bias},
            "dtypes": {"source_weights": sorted(dtypes_seen), "coeffs": "F32", "anchor": "F32", "guard_radius": "F32"},
            "layers": layers_info,
            "tensors": tensors,
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
    return Path(out)


def protect(model_dir: str | os.PathLike, out: str | os.PathLike, *, n_terms: int = DEFAULT_TERMS,
            calibration: str | os.PathLike | None = None, fraction: float = DEFAULT_FRACTION,
            force: bool = False) -> Path:
    """Calibrate and convert `model_dir` into a Taylor release at `out` (all-or-nothing)."""
    check_terms(n_terms)
    check_fraction(fraction)
    out = Path(out)
    if out.exists() and not force:
        raise ZkfpError(f"output exists: {out} (pass --force to replace it)")
    calib = calibrate(model_dir, calibration)
    return convert(model_dir, out, calib, n_terms=n_terms, fraction=fraction, force=force)
