"""The `zkfp` command: a thin layer over the library.

Each package registers its own subcommands from a light `cli` module that imports only
argparse; the heavy imports (torch, transformers, ezkl) happen inside the handler that needs
them, so `zkfp verify --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from zkfp import __version__
from zkfp.errors import ZkfpError

EXIT_UNUSABLE = 2


def _command_modules():
    import fingerprint.cli
    import prover.cli
    import taylor.cli
    import verifier.cli
    import zkfp.demo_cli

    return (zkfp.demo_cli, taylor.cli, fingerprint.cli, prover.cli, verifier.cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zkfp",
        description="Taylor-protected releases, human-readable fingerprints, and ZK proofs of honest fingerprinting.",
    )
    parser.add_argument("--version", action="version", version=f"zkfp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return int(handler(args) or 0)
    except ZkfpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
