"""Proving that a fingerprint was computed from a release: witness data, proofs, bundles."""
