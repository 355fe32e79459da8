"""File helpers shared by every writer and reader: hashing, JSON, and all-or-nothing output dirs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from zkfp.errors import ZkfpError

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str, max_bytes: int = 64 << 20) -> Any:
    """Read a JSON file from outside, refusing huge or malformed files with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise ZkfpError(f"{what} not found: {path}")
    if path.stat().st_size > max_bytes:
        raise ZkfpError(f"{what} is too large ({path.stat().st_size} bytes > {max_bytes}): {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ZkfpError(f"{what} is not valid JSON ({exc}): {path}") from None


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `out` in one rename.

    On any failure the temporary folder is removed and an existing `out` is left untouched,
    so a reader never sees a half-written release or bundle.
    """
    out = Path(out)
    if out.exists() and not force:
        raise ZkfpError(f"output exists: {out} (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise ZkfpError(f"output exists and is not a folder: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
