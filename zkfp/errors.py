"""Errors whose message is meant to be read by a user: one clear line, naming the culprit."""


class ZkfpError(Exception):
    """Base class; the CLI prints `error: <message>` and exits non-zero."""


class CheckpointError(ZkfpError):
    """A model directory that cannot be read safely (missing, pickle-only, corrupt...)."""


class UnsupportedArchitecture(ZkfpError):
    """A config whose architecture zkfp has no adapter for."""


class ReleaseError(ZkfpError):
    """A Taylor release that fails validation (manifest, hashes, tensor shapes)."""


class FingerprintError(ZkfpError):
    """A fingerprint file or comparison that cannot be trusted."""


class BundleError(ZkfpError):
    """A proof bundle that is unusable (missing or malformed files)."""


class RegistryError(ZkfpError):
    """A fingerprint registry that cannot be used, or an entry it refuses."""
