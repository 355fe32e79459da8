"""`zkfp demo`: the whole flow on the embedded tiny model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the pipeline on the embedded tiny model and print a summary")
    p.add_argument("--out", default="zkfp-demo", help="folder for the demo's outputs (default: ./zkfp-demo)")
    p.add_argument("--srs", help="ceremony SRS file for the proof (default: a dev SRS, marked insecure)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from zkfp.demo import run

    return run(args.out, srs=args.srs)
