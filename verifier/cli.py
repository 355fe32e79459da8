"""Subcommands of this package (registered by zkfp.cli). Only argparse is imported here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a proof bundle against a release (exit 0 valid, 1 invalid, 2 unusable)")
    p.add_argument("bundle", metavar="BUNDLE_DIR")
    p.add_argument("--release", required=True, metavar="RELEASE_DIR")
    p.add_argument("--srs", metavar="FILE")
    p.add_argument("--allow-dev-srs", action="store_true", help="accept a proof made with an insecure dev SRS")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_verify)


def _verify(args) -> int:
    import json
    import sys

    from verifier.verify import verify_bundle

    res = verify_bundle(args.bundle, args.release, srs=args.srs, allow_dev_srs=args.allow_dev_srs,
                        progress=lambda line: print(line + " …", file=sys.stderr))
    if args.json:
        print(json.dumps(res.to_json()))
    elif res.ok:
        print("valid: the fingerprint was proven from this release")
    else:
        print(f"{res.status}: {'; '.join(res.reasons)}", file=sys.stderr)
    return {"valid": 0, "invalid": 1}.get(res.status, 2)
