"""Structured reference strings: a ceremony file by path, or a dev SRS made locally on request.

Nothing is ever downloaded. A dev SRS (`ezkl.gen_srs`) is insecure — whoever made it knows
the trapdoor and can forge proofs — so it is only made when asked for, kept in the cache
under `srs/dev-k{logrows}.srs`, and marked `dev` in every bundle proved with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zkfp.errors import ZkfpError
from zkfp.files import sha256_file

HEADER_BYTES = 260  # raw halo2 KZG params: 128·2^k + 260 bytes (measured on ezkl 23.0.5)


def cache_dir() -> Path:
    root = os.environ.get("ZKFP_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "zkfp"


@dataclass(frozen=True)
class SrsInfo:
    path: Path
    logrows: int      # the k of the file (it serves every circuit with logrows ≤ k)
    sha256: str
    kind: str         # "dev" (this machine's dev SRS) or "unknown": what can be established from the file


def file_logrows(path: Path) -> int:
    size = path.stat().st_size - HEADER_BYTES
    if size <= 0 or size % 128:
        raise ZkfpError(f"{path} is not a raw KZG SRS file (unexpected size {path.stat().st_size})")
    k = (size // 128).bit_length() - 1
    if 1 << k != size // 128:
        raise ZkfpError(f"{path} is not a raw KZG SRS file (unexpected size {path.stat().st_size})")
    return k


def dev_path(logrows: int) -> Path:
    return cache_dir() / "srs" / f"dev-k{logrows}.srs"


def is_known_dev(sha256: str) -> bool:
    """True when a file with this hash is one of this machine's dev SRS files."""
    folder = cache_dir() / "srs"
    for p in folder.glob("dev-k*.srs.sha256") if folder.is_dir() else ():
        if p.read_text().strip() == sha256:
            return True
    return False


def dev_srs(logrows: int) -> SrsInfo:
    """This machine's dev SRS for `logrows`, generated (insecurely) on first use."""
    import ezkl

    path = dev_path(logrows)
    digest_file = path.with_name(path.name + ".sha256")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        ezkl.gen_srs(str(tmp), logrows)
        os.replace(tmp, path)
        digest_file.write_text(sha256_file(path) + "\n")
    if not digest_file.is_file():
        digest_file.write_text(sha256_file(path) + "\n")
    return SrsInfo(path=path, logrows=logrows, sha256=digest_file.read_text().strip(), kind="dev")


def srs_file(path: str | os.PathLike, need_logrows: int | None = None) -> SrsInfo:
    """An SRS file given by path (e.g. a ceremony's kzg{k}.srs). Its kind is what the file shows:
    "dev" when it is one of this machine's dev SRS files, else "unknown" (a ceremony file and a
    dev SRS made elsewhere cannot be told apart from their bytes)."""
    p = Path(path)
    if not p.is_file():
        raise ZkfpError(f"SRS file not found: {p}")
    k = file_logrows(p)
    if need_logrows is not None and k < need_logrows:
        raise ZkfpError(f"SRS {p} has logrows {k}, the circuit needs {need_logrows}")
    digest = sha256_file(p)
    kind = "dev" if is_known_dev(digest) else "unknown"
    return SrsInfo(path=p, logrows=k, sha256=digest, kind=kind)
