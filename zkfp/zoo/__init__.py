"""Tiny, seeded, briefly trained models for tests, benchmarks and the demo.

Nothing is downloaded: the text comes from `corpus` (a seeded generator), the tokenizer is
shipped in `zkfp/assets`, and every model is built from a config and trained here on CPU.
"""
