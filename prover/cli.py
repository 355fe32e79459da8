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
    p.add_argument("--workers", type=int, metavar="N", help="chunks proved at once on this machine "
                   "(default: as many as its memory holds, at most one per CPU)")
    p.add_argument("--ray-address", metavar="ADDR", help="prove on this Ray cluster instead of this machine")
    p.add_argument("--chunk-rows", type=int, metavar="ROWS", help="a smaller row budget per chunk (more, smaller "
                   "chunks; the bundle records it)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_prove)


def _prove(args) -> int:
    from prover.prove import prove

    out = prove(args.release, args.out, srs=args.srs, dev_srs=args.dev_srs,
                progress=not args.no_progress, force=args.force, workers=args.workers,
                ray_address=args.ray_address, chunk_rows=args.chunk_rows)
    print(f"bundle written: {out}")
    return 0
