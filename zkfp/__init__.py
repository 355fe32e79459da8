"""zkfp: Taylor-protected model releases, human-readable fingerprints, and zero-knowledge
proofs that a fingerprint was honestly computed from a release.

The work lives in five packages: `taylor` (protected releases), `fingerprint` (invariants,
encoder, image), `circuits` (the proven computation), `prover` and `verifier`. This package
holds what they share (errors, checkpoint reading, architecture adapters, the tiny-model zoo)
and the `zkfp` command line.
"""

__version__ = "0.1.0"
