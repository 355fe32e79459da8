"""The spec encoder's projection matrix P, read with numpy from the fingerprint's shipped asset.

numpy only (the verifier uses it): fingerprint.encoder ships P in
fingerprint/assets/encoder.safetensors (key `projection`), which is what `fingerprint.extract`
uses; regenerating it from its seed would need torch.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from fingerprint.spec import layer_length  # pure Python
from zkfp.errors import ZkfpError

ASSET = Path(__file__).resolve().parent.parent / "fingerprint" / "assets" / "encoder.safetensors"


@lru_cache(maxsize=4)
def _load(path: str) -> np.ndarray | None:
    from safetensors.numpy import load_file

    if not Path(path).is_file():
        return None
    return load_file(path).get("projection")


def load_projection(k: int, m: int, path: str | Path = ASSET) -> np.ndarray:
    """P (m × 3k(k−1)): the projection the spec's encoder applies to each layer's invariants."""
    n = layer_length(k)
    P = _load(str(path))
    if P is None or P.shape != (m, n):
        got = None if P is None else P.shape
        raise ZkfpError(f"the encoder projection ({path}) is missing or has shape {got}, expected {(m, n)}")
    return np.asarray(P, dtype=np.float64)
