"""The embedded default model: a tiny trained Llama (GQA) shipped in `zkfp/assets/tiny-llama`.

Shipped rather than trained at run time so the demo and the proof golden files start from
the same bytes everywhere. `python -m zkfp.zoo.embedded` rebuilds it from its seed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-llama"
SPEC = dict(family="llama", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=172)
SEED, STEPS, DOMAINS = 7, 600, ["forest", "kitchen"]


def path() -> Path:
    """Folder of the embedded checkpoint (config.json, model.safetensors, tokenizer)."""
    return ASSET_DIR


def rebuild(out: Path = ASSET_DIR) -> Path:
    from zkfp.zoo.tiny import make_trained

    shutil.rmtree(out, ignore_errors=True)
    spec = dict(SPEC)
    return make_trained(spec.pop("family"), out, seed=SEED, domain=DOMAINS, steps=STEPS, **spec)


if __name__ == "__main__":
    print(rebuild())
