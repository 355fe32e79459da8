"""The Taylor release format: what is in a release folder, how it is written, and how it is read.

A release folder holds
  manifest.json             format, source architecture and config, N, guard, expanded neurons
                            per layer, dtypes, every tensor's file/shape/dtype, every file's sha256
  config.json               the source model's config (transformers), plus tokenizer files and
                            generation_config.json when the source had them
  base.safetensors          tensors outside the blocks (embeddings, final norm, lm_head)
  layer-00000.safetensors   one file per block: its attention/norm tensors under their original
  ...                       transformers names, and its MLP as `taylor.layers.{i}.*` (see below)

MLP tensors of block i (prefix `taylor.layers.{i}.`), S = expanded neurons, F = exact ones, both
in ascending original neuron order (the manifest lists S; F is the complement):
  in_weight          (|S|, d)      gate rows (gated MLP) or first-projection rows (plain MLP), in clear
  up_weight          (|S|, d)      gated only: up-projection rows, in clear
  anchor             (|S|,)        z0: the user forms δ = in_weight·x − anchor (any first-layer bias is
                                   folded: derivatives are taken at z0 + b, and b itself is not released)
  coeffs             (N+1, d, |S|) Θ_n = W_down[:, S] · act^{(n)}(z0 + b) / n!  (fp32)
  guard_radius       (|S|,)        elements with |δ| > guard_radius evaluate only orders ≤ guard.order
  exact_in_weight    (|F|, d)      \
  exact_in_bias      (|F|,)         | plain MLP with a first-layer bias only
  exact_up_weight    (|F|, d)       | gated only
  exact_down_weight  (d, |F|)      /  the exact neurons, original weights in the clear
  down_bias          (d,)          plain MLP with a second-layer bias only
All weights use nn.Linear's (out, in) convention whatever the source (GPT-2's Conv1D is transposed).
The down-projection columns of S are only present through `coeffs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zkfp.architectures import CAUSAL_FAMILIES, Architecture, detect
from zkfp.checkpoint import TorchTensors
from zkfp.errors import ReleaseError, ZkfpError
from zkfp.files import read_json, sha256_file
from zkfp.safetensors_folder import SafetensorsFolder, plain_file_name

if TYPE_CHECKING:
    import torch

FORMAT = "zkfp-taylor-release"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BASE_FILE = "base.safetensors"
MAX_TERMS = 32
MLP_PREFIX = "taylor.layers.{i}."
# Tokenizer and generation files copied from the source when present (and then hashed).
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
              "chat_template.jinja")


def layer_file(i: int) -> str:
    return f"layer-{i:05d}.safetensors"


def mlp_key(i: int, name: str) -> str:
    return MLP_PREFIX.format(i=i) + name


@dataclass(frozen=True)
class MlpLayout:
    """Which MLP tensors a block has in a release, and their shapes."""

    gated: bool
    in_bias: bool
    down_bias: bool

    def shapes(self, hidden: int, n_expanded: int, n_exact: int, n_terms: int) -> dict[str, tuple[int, ...]]:
        d, s, f = hidden, n_expanded, n_exact
        out = {"in_weight": (s, d), "anchor": (s,), "coeffs": (n_terms + 1, d, s), "guard_radius": (s,),
               "exact_in_weight": (f, d), "exact_down_weight": (d, f)}
        if self.gated:
            out["up_weight"] = (s, d)
            out["exact_up_weight"] = (f, d)
        if self.in_bias:
            out["exact_in_bias"] = (f,)
        if self.down_bias:
            out["down_bias"] = (d,)
        return out


def release_arch(config: dict) -> Architecture:
    return detect(config, CAUSAL_FAMILIES)


class ReleaseReader(TorchTensors):
    """Validated, lazy read access to a release folder.

    Opening checks the manifest (format and version), that the folder holds exactly the files
    the manifest lists with the recorded sha256 (`verify=True`, the default), and that every
    safetensors file holds exactly the tensors the manifest and the architecture require, with
    the required shapes. Any failure raises ReleaseError naming the file or tensor.

    Tensors are read on demand (`get`, `get_rows`; zkfp.safetensors_folder), so a caller that needs
    a few keeps only those in memory. Like zkfp.checkpoint.Checkpoint it offers `config`, `names`,
    `in`, `get`, `shape`, so zkfp.architectures.ModelReader can read the non-MLP tensors of a
    release by role.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ReleaseError(f"release folder does not exist: {self.path}")
        try:
            self.manifest: dict = read_json(self.path / MANIFEST, "release manifest")
        except ZkfpError as exc:
            raise ReleaseError(str(exc)) from None
        m = self.manifest
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise ReleaseError(f"{self.path / MANIFEST} is not a zkfp Taylor release manifest")
        if m.get("format_version") != FORMAT_VERSION:
            raise ReleaseError(f"unknown release format_version {m.get('format_version')!r} "
                               f"(this zkfp reads version {FORMAT_VERSION})")
        try:
            self.config: dict = m["source"]["config"]
            self.n_terms: int = int(m["n_terms"])
            self.activation: str = m["activation"]
            self.guard_order: int = int(m["guard"]["order"])
            self._layers: list[dict] = list(m["layers"])
            self._files: dict[str, dict] = dict(m["files"])
            self._tensors: dict[str, dict] = dict(m["tensors"])
            weight_map = {name: info["file"] for name, info in self._tensors.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ReleaseError(f"release manifest is missing or has a malformed field: {exc}") from None
        self.arch = release_arch(self.config)
        if not 1 <= self.n_terms <= MAX_TERMS:
            raise ReleaseError(f"release n_terms {self.n_terms} is outside 1..{MAX_TERMS}")
        self._check_files(verify)
        self.tensors = SafetensorsFolder(self.path, weight_map, error=ReleaseError, source="manifest")
        try:
            self._check_tensors()
        except (KeyError, TypeError, ValueError) as exc:
            raise ReleaseError(f"release manifest is missing or has a malformed field: {exc}") from None

    # -- validation ----------------------------------------------------------------------
    def _check_files(self, verify: bool) -> None:
        present = {p.name for p in self.path.iterdir() if p.name != MANIFEST}
        for name in self._files:
            plain_file_name(name, ReleaseError, "manifest")
        missing = sorted(set(self._files) - present)
        if missing:
            raise ReleaseError(f"release file missing: {missing[0]}")
        extra = sorted(present - set(self._files))
        if extra:
            raise ReleaseError(f"unexpected file in release (not in the manifest): {extra[0]}")
        if verify:
            for name, info in sorted(self._files.items()):
                if sha256_file(self.path / name) != info.get("sha256"):
                    raise ReleaseError(f"sha256 mismatch for {name}: the file is not the one this release's "
                                       "manifest recorded (changed, or taken from another release)")

    def _check_tensors(self) -> None:
        d = self.arch.dims
        expected = dict(self._tensors)  # manifest: name -> {file, shape, dtype}; MLP shapes recomputed below
        layout = MlpLayout(**self.manifest["mlp_layout"])
        if len(self._layers) != d.layers:
            raise ReleaseError(f"manifest describes {len(self._layers)} layers, config has {d.layers}")
        for i, info in enumerate(self._layers):
            exp = np.asarray(info["expanded"], dtype=np.int64)
            if exp.size and (exp.min() < 0 or exp.max() >= d.intermediate or np.any(np.diff(exp) <= 0)):
                raise ReleaseError(f"layer {i}: expanded neuron indices are not sorted unique indices < {d.intermediate}")
            for name, shape in layout.shapes(d.hidden, exp.size, d.intermediate - exp.size, self.n_terms).items():
                key = mlp_key(i, name)
                if key not in expected:
                    raise ReleaseError(f"manifest lacks the required tensor {key}")
                if tuple(expected[key]["shape"]) != shape:
                    raise ReleaseError(f"tensor {key} has shape {tuple(expected[key]['shape'])}, expected {shape}")
        by_file: dict[str, set[str]] = {}
        for name, info in expected.items():
            by_file.setdefault(info["file"], set()).add(name)
        for file_name, names in by_file.items():
            if file_name not in self._files:
                raise ReleaseError(f"tensor {sorted(names)[0]} is in {file_name}, which the manifest does not list")
        for file_name in self._files:
            if not file_name.endswith(".safetensors"):
                continue
            actual = self.tensors.entries(file_name)
            wanted = by_file.get(file_name, set())
            missing = sorted(wanted - set(actual))
            if missing:
                raise ReleaseError(f"tensor missing from {file_name}: {missing[0]}")
            extra = sorted(set(actual) - wanted)
            if extra:
                raise ReleaseError(f"unexpected tensor in {file_name}: {extra[0]}")
            for k in sorted(wanted):
                shape, dtype = actual[k]
                if shape != tuple(expected[k]["shape"]):
                    raise ReleaseError(f"tensor {k} in {file_name} has shape {shape}, manifest says "
                                       f"{tuple(expected[k]['shape'])}")
                if dtype != expected[k]["dtype"]:
                    raise ReleaseError(f"tensor {k} in {file_name} has dtype {dtype}, manifest says {expected[k]['dtype']}")

    # -- access --------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape as the (validated) manifest records it."""
        if name not in self._tensors:
            raise ReleaseError(f"tensor {name!r} is not in the release")
        return tuple(self._tensors[name]["shape"])

    def files(self) -> list[Path]:
        return [self.path / n for n in sorted(self._files)]

    # -- the Taylor MLP of one block ----------------------------------------------------
    @property
    def layout(self) -> MlpLayout:
        return MlpLayout(**self.manifest["mlp_layout"])

    def expanded(self, i: int) -> np.ndarray:
        """Original indices of block i's Taylor-expanded neurons (ascending)."""
        return np.asarray(self._layers[i]["expanded"], dtype=np.int64)

    def exact(self, i: int) -> np.ndarray:
        """Original indices of block i's exact (clear) neurons (ascending)."""
        return np.setdiff1d(np.arange(self.arch.dims.intermediate), self.expanded(i))

    def mlp(self, i: int, dtype: "torch.dtype | None" = None) -> dict[str, "torch.Tensor"]:
        """Block i's release MLP tensors by short name (in_weight, anchor, coeffs, ...)."""
        prefix = MLP_PREFIX.format(i=i)
        return {n[len(prefix):]: self.get(n, dtype) for n in self._tensors if n.startswith(prefix)}
