"""Where fingerprints read their tensors: a transformers checkpoint or a Taylor release, by role.

Both give the same interface (embedding rows, norm gains, one weight matrix at a time by role,
`release()` to drop per-layer state), so the invariants (`fingerprint.extract`) and the weights
comparison (`fingerprint.weights`) never ask which one they read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from zkfp.errors import CheckpointError

DTYPE = torch.float32  # what every fingerprint computation reads tensors as


class CheckpointSource:
    """Tensors by role from a transformers checkpoint (via zkfp's ModelReader)."""

    def __init__(self, path: Path):
        from zkfp.architectures import ModelReader
        from zkfp.checkpoint import Checkpoint

        self.reader = ModelReader(Checkpoint(path))
        self.arch = self.reader.arch
        self.kind = "checkpoint"
        self._qkv_cache: tuple[int, tuple] | None = None

    def embedding_rows(self, ids: list[int]) -> torch.Tensor:
        return self.reader.ckpt.get_rows(self.reader.embedding_key(), ids, DTYPE)

    def vocab(self) -> int:
        return self.reader.ckpt.shape(self.reader.embedding_key())[0]

    def attn_gain(self, i: int) -> torch.Tensor:
        f = self.reader.family
        if f.pre_norm:
            return self.reader.norm(f.attn_norm, i, DTYPE).gain
        # Post-norm (BERT): attention reads the previous block's output LayerNorm (or the embeddings').
        if i == 0:
            return self.reader.ckpt.get(self.reader.key("embeddings.LayerNorm.weight"), DTYPE)
        return self.reader.norm(f.mlp_norm, i - 1, DTYPE).gain

    def mlp_gain(self, i: int) -> torch.Tensor:
        f = self.reader.family
        return self.reader.norm(f.mlp_norm if f.pre_norm else f.attn_norm, i, DTYPE).gain

    def weight(self, role: str, i: int) -> torch.Tensor:
        f = self.reader.family
        if role in ("q", "k", "v") and f.qkv is not None:
            if self._qkv_cache is None or self._qkv_cache[0] != i:
                self._qkv_cache = (i, self.reader._split_qkv(self.reader.linear(f.qkv, i)))
            return self._qkv_cache[1]["qkv".index(role)].weight
        name = getattr(f, role)
        if name is None:
            raise CheckpointError(f"{f.name} has no {role} projection")
        return self.reader.linear(name, i).weight  # source dtype; converted block-wise by _project

    def has_gate(self) -> bool:
        return self.reader.family.gate is not None

    def release(self):
        """Drop per-layer state and close the shards' memory maps (their pages count in RSS)."""
        self._qkv_cache = None
        self.reader.ckpt.close()


class ReleaseSource(CheckpointSource):
    """Tensors by role from a Taylor release: attention, norms and embeddings as released, the MLP as
    its effective weights (`taylor.effective_mlp`: exact neurons as released, expanded neurons'
    W_down recovered from the Taylor coefficients), so a release and its source checkpoint give the
    same fingerprint."""

    def __init__(self, path: Path):
        from taylor.release import ReleaseReader
        from zkfp.architectures import ModelReader

        self.release_reader = ReleaseReader(path)
        self.reader = ModelReader(self.release_reader)
        self.arch = self.release_reader.arch
        self.kind = "taylor-release"
        self._qkv_cache = None
        self._mlp: tuple[int, object] | None = None

    def weight(self, role: str, i: int) -> torch.Tensor:
        if role not in ("gate", "up", "down"):
            return super().weight(role, i)
        from taylor import effective_mlp

        if self._mlp is None or self._mlp[0] != i:
            self._mlp = (i, effective_mlp(self.release_reader, i))
        return getattr(self._mlp[1], role)

    def release(self):
        self._mlp = None
        super().release()


def open_source(path: str | os.PathLike):
    """A Taylor release (a folder whose manifest.json says so) or a transformers checkpoint."""
    path = Path(path)
    manifest = path / "manifest.json"
    if manifest.is_file():
        try:
            is_release = json.loads(manifest.read_text()).get("format") == "zkfp-taylor-release"
        except (ValueError, OSError, AttributeError):
            is_release = False  # unreadable: a release still, unless the folder is a checkpoint (below)
        if is_release or not (path / "config.json").is_file():
            return ReleaseSource(path)  # a broken release manifest is reported by ReleaseReader
    return CheckpointSource(path)
