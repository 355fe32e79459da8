"""Subcommands of this package (registered by zkfp.cli). Only argparse is imported here."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """No subcommands yet."""
