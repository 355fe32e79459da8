"""Checking a proof bundle against a release. Imports neither torch nor transformers."""

from verifier.verify import VerifyResult, verify_bundle

__all__ = ["VerifyResult", "verify_bundle"]
