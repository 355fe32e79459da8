"""Checking a proof bundle against a release. Imports neither torch nor transformers."""


def verify_bundle(bundle_dir, release_dir, srs=None, allow_dev_srs=False):
    """See verifier.verify.verify_bundle."""
    from verifier.verify import verify_bundle as _vb

    return _vb(bundle_dir, release_dir, srs=srs, allow_dev_srs=allow_dev_srs)
