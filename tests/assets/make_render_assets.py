"""Regenerate the fingerprint.png assets drawn by an *older* Pillow (used by test_render_versions.py).

    OLD=$(mktemp -d) && pip install --target "$OLD" 'pillow==10.0.1'
    PYTHONPATH="$OLD":. python tests/assets/make_render_assets.py        # old Pillow
    python tests/assets/make_render_assets.py                            # installed Pillow

Writes render_seed<seed>_pillow<version>.png and adds them to render_assets.json (each v, the
Pillow version that drew it, the PNG's sha256) next to this file; entries of other versions are
kept, so the assets hold drawings of two Pillow versions and whichever one is installed, the
other one is a real cross-version check. Vectors: seeded numpy Gaussians of length 64.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import PIL

from fingerprint.render import png_bytes

HERE = pathlib.Path(__file__).resolve().parent
SEEDS = (0, 3, 10)  # seeds where Pillow 10.0.1 and 13.0.0 draw different pixels


def main() -> None:
    version = PIL.__version__
    print("Pillow", version, "from", PIL.__file__)
    path = HERE / "render_assets.json"
    assets = json.loads(path.read_text())["assets"] if path.exists() else []
    for seed in SEEDS:
        v = np.random.default_rng(seed).standard_normal(64).tolist()
        name = f"render_seed{seed}_pillow{version}.png"
        data = png_bytes(v)
        (HERE / name).write_bytes(data)
        assets = [a for a in assets if a["file"] != name]
        assets.append({"file": name, "seed": seed, "pillow": version,
                       "sha256": hashlib.sha256(data).hexdigest(), "v": v})
    assets.sort(key=lambda a: (a["pillow"], a["seed"]))
    meta = {"about": "fingerprint.render.png_bytes(v) drawn by the Pillow version named in each entry; "
                     "v = numpy.random.default_rng(seed).standard_normal(64)",
            "assets": assets}
    path.write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
