"""Taylor-protected releases of transformers checkpoints (TaylorMLP, Wang et al., EMNLP 2024).

Public API (heavy modules are imported on first use, so `import taylor` stays light):
  protect(model_dir, out, *, n_terms=None, slowdown=None, calibration=None, fraction≈0.70, force=False) -> Path
    (neither N nor slowdown: a measured 4× at hidden ≥ 1024, else N = 12)
  load_release(release_dir, *, dtype=torch.float32, verify=True) -> transformers model
  audit(release_dir, original=None, tol=1e-3) -> AuditReport
  effective_down(release, layer) -> Tensor (hidden, intermediate)
  effective_mlp(release, layer) -> EffectiveMLP
  release.ReleaseReader(release_dir, verify=True)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "protect": "taylor.conversion", "calibrate": "taylor.calibration", "convert": "taylor.conversion",
    "load_release": "taylor.runtime", "TaylorMLP": "taylor.runtime",
    "audit": "taylor.audit", "AuditReport": "taylor.audit",
    "effective_down": "taylor.effective", "effective_mlp": "taylor.effective", "EffectiveMLP": "taylor.effective",
    "ReleaseReader": "taylor.release",
}
__all__ = sorted(_EXPORTS)


_SUBMODULES = ("audit", "calibration", "conversion", "effective", "jets", "release", "runtime")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"taylor.{name}")
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return getattr(module, name)
    raise AttributeError(f"module 'taylor' has no attribute {name!r}")
