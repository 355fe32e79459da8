"""Subcommands of this package (registered by zkfp.cli). Only argparse is imported here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a proof bundle, without the weights or against a release "
                                      "(exit 0 valid, 1 invalid, 2 unusable)")
    p.add_argument("bundle", metavar="BUNDLE_DIR")
    p.add_argument("--release", metavar="RELEASE_DIR", help="also establish that this release is the proven model")
    p.add_argument("--srs", metavar="FILE", help="the SRS the proof was made under")
    p.add_argument("--allow-dev-srs", action="store_true", help="accept a proof made with an insecure dev SRS")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_verify)

    c = sub.add_parser("commit", help="print a release's commitment digest (compare it with a bundle's)")
    c.add_argument("release", metavar="RELEASE_DIR")
    c.add_argument("--srs", required=True, metavar="FILE", help="the SRS the bundle was made under")
    c.add_argument("--chunk-rows", type=int, metavar="ROWS", help="the bundle's row budget per chunk, if it "
                   "declares one other than the default")
    c.set_defaults(handler=_commit)


def _verify(args) -> int:
    import json
    import sys

    from verifier.verify import verify_bundle

    res = verify_bundle(args.bundle, args.release, srs=args.srs, allow_dev_srs=args.allow_dev_srs,
                        progress=lambda line: print(line + " …", file=sys.stderr))
    if args.json:
        print(json.dumps(res.to_json()))
    elif res.ok:
        print(f"valid: {res.statement}")
    else:
        print(f"{res.status}: {'; '.join(res.reasons)}", file=sys.stderr)
    return {"valid": 0, "invalid": 1}.get(res.status, 2)


def _commit(args) -> int:
    from verifier.commit import commit_release

    print(commit_release(args.release, args.srs, args.chunk_rows))
    return 0
