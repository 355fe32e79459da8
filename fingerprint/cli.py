"""Subcommands of this package (registered by zkfp.cli). Only argparse is imported here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fingerprint", help="fingerprint a transformers checkpoint or a Taylor release")
    p.add_argument("path", help="model folder (config.json + safetensors) or Taylor release folder")
    p.add_argument("--out", required=True, help="where to write FP.json")
    p.add_argument("--image", help="also render the fingerprint to this PNG")
    p.add_argument("--tokens-from", help="use the token ids of this FP.json (to compare models whose "
                   "vocabularies differ)")
    p.add_argument("--no-invariants", action="store_true",
                   help="leave the invariant terms out of FP.json (they reveal more about the weights than v)")
    p.set_defaults(handler=_fingerprint)

    c = sub.add_parser("compare", help="compare two fingerprints (similarity on the 100×cosine scale + verdict)")
    c.add_argument("a", help="FP.json, or a proof bundle folder (its proven v; run zkfp verify on it first)")
    c.add_argument("b", help="FP.json or a proof bundle folder")
    c.add_argument("--json", action="store_true", help="print a JSON object")
    c.set_defaults(handler=_compare)


def _fingerprint(args: argparse.Namespace) -> int:
    from fingerprint import extract as E

    ids = E.load(args.tokens_from).token_ids if args.tokens_from else None
    fp = E.extract(args.path, token_ids=ids)
    E.save(fp, args.out, with_invariants=not args.no_invariants)
    msg = f"wrote {args.out} (spec {fp.spec['version']}, k={fp.spec['k']}, m={fp.spec['m']})"
    if args.image:
        from fingerprint.render import save_png

        save_png(fp.v, args.image)
        msg += f" and {args.image}"
    print(msg)
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from fingerprint import extract as E
    from fingerprint.compare import compare

    result = compare(E.load(args.a), E.load(args.b))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"similarity {result['similarity']:.2f} (100 × cosine of {result['basis']}): {result['verdict']}")
        print(f"  thresholds: same-lineage ≥ {result['thresholds']['related']}, unrelated ≤ "
              f"{result['thresholds']['unrelated']}; implied false-positive rate {result['false_positive_rate']:.1e}")
    return 0
