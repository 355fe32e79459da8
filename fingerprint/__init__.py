"""Human-readable fingerprints from weight invariants (after HuRef, Zeng et al., NeurIPS 2024)."""
