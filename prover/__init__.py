"""Proving that a fingerprint was computed from a release: witness data, proofs, bundles."""

# Imported eagerly so that `prover.prove` is the function, not the submodule of the same name.
from prover.prove import prove

__all__ = ["prove"]
