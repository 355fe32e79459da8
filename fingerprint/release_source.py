"""Fingerprint source for a Taylor release: attention, norms and embeddings as released, the MLP
as its effective weights (`taylor.effective_mlp`: exact neurons as released, expanded neurons'
W_down recovered from the Taylor coefficients), so a release and its source checkpoint give the
same fingerprint."""

from __future__ import annotations

from pathlib import Path

import torch

from fingerprint.extract import DTYPE, _CheckpointSource


class ReleaseSource(_CheckpointSource):
    def __init__(self, path: Path):
        from taylor.release import ReleaseReader
        from zkfp.architectures import ModelReader

        self.release_reader = ReleaseReader(path)
        self.reader = ModelReader(self.release_reader)
        self.arch = self.release_reader.arch
        self.kind = "taylor-release"
        self._qkv_cache = None
        self._mlp: tuple[int, object] | None = None

    def embedding_rows(self, ids: list[int]) -> torch.Tensor:
        key = self.reader.embedding_key()
        return self.release_reader.get_rows(key, ids, DTYPE)

    def vocab(self) -> int:
        return self.release_reader.shape(self.reader.embedding_key())[0]

    def weight(self, role: str, i: int) -> torch.Tensor:
        if role not in ("gate", "up", "down"):
            return super().weight(role, i)
        from taylor import effective_mlp

        if self._mlp is None or self._mlp[0] != i:
            self._mlp = (i, effective_mlp(self.release_reader, i))
        return getattr(self._mlp[1], role)

    def release(self):
        self._qkv_cache = None
        self._mlp = None
        self.release_reader.close()
