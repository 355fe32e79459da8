"""Subcommands of this package (registered by zkfp.cli). Only argparse is imported here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prove", help="prove that a release's fingerprint was computed honestly; write a bundle")
    p.add_argument("release", metavar="RELEASE_DIR")
    p.add_argument("--out", required=True, metavar="BUNDLE_DIR")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--srs", metavar="FILE", help="ceremony SRS file (never downloaded)")
    g.add_argument("--dev-srs", action="store_true", help="make/use an insecure local SRS (tests only)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_prove)


def _prove(args) -> int:
    from prover.prove import prove

    out = prove(args.release, args.out, srs=args.srs, dev_srs=args.dev_srs,
                progress=not args.no_progress, force=args.force)
    print(f"bundle written: {out}")
    return 0
