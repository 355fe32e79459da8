"""Proving that a fingerprint was computed from a release: witness data, proofs, bundles."""


def prove(release_dir, out_dir, srs=None, dev_srs=False, progress=True, force=False):
    """See prover.prove.prove."""
    from prover.prove import prove as _prove

    return _prove(release_dir, out_dir, srs=srs, dev_srs=dev_srs, progress=progress, force=force)
