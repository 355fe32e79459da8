"""Checking a proof bundle against a release. Imports neither torch nor transformers."""
