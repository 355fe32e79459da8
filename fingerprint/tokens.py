"""Which tokens a fingerprint's rows are: token ids ↔ the tokenizer's token strings.

A fingerprint reads the embedding rows of k token ids, but ids are only names. A derivative may
number its vocabulary anew: permuting the ids, with the tokenizer re-mapped and the embedding
(and output) rows moved with them, changes no output text, and vocabulary trimming renumbers
what it keeps. The published ids then name other tokens in the suspect. The token strings of
the vocabulary (tokenizer.json, read with `tokenizers`) survive any renumbering that keeps the
model's behaviour, so FP.json records them beside the ids, and a suspect is read at the ids its
own tokenizer gives those strings.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

TOKENIZER = "tokenizer.json"


def vocabulary(folder: str | os.PathLike) -> dict[str, int] | None:
    """The folder's token string → id map (added tokens included), or None without a readable
    tokenizer.json: such a model is read by id, as before tokens were recorded."""
    path = Path(folder) / TOKENIZER
    if not path.is_file():
        return None
    stat = path.stat()
    return _read_vocabulary(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)  # identify asks once per registered token list: parse a real (10^5-token) vocabulary once
def _read_vocabulary(path: str, _mtime_ns: int, _size: int) -> dict[str, int] | None:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path).get_vocab(with_added_tokens=True)
    except Exception:  # a tokenizer.json this `tokenizers` cannot read: fall back to ids
        return None


def strings_of(folder: str | os.PathLike, ids: list[int]) -> list[str] | None:
    """The token strings of `ids` in the folder's tokenizer (None: no tokenizer, or an id it lacks)."""
    vocab = vocabulary(folder)
    if vocab is None:
        return None
    by_id = {i: s for s, i in vocab.items()}
    out = [by_id.get(int(i)) for i in ids]
    return None if any(s is None for s in out) else out


def ids_of(folder: str | os.PathLike, strings: list[str]) -> list[int] | None:
    """The folder's ids of `strings` (None: no tokenizer, or a string its vocabulary lacks)."""
    vocab = vocabulary(folder)
    if vocab is None:
        return None
    out = [vocab.get(s) for s in strings]
    return None if any(i is None for i in out) else out


def ids_to_read(folder: str | os.PathLike, token_ids: list[int], tokens: list[str] | None) -> list[int]:
    """Where `folder` holds a published fingerprint's rows: its own ids for the published token
    strings when its tokenizer has them all (a renumbered vocabulary), else the published ids."""
    mapped = None if tokens is None else ids_of(folder, tokens)
    return list(token_ids) if mapped is None else mapped


def matched_ids(published: str | os.PathLike, suspect: str | os.PathLike,
                ids: list[int]) -> tuple[list[int], list[int]]:
    """The published `ids` and the suspect's ids of the same tokens, pairwise: by token string when
    both folders have a tokenizer (ids whose string the suspect lacks are left out), else the ids
    themselves."""
    a, b = vocabulary(published), vocabulary(suspect)
    if a is None or b is None:
        return list(ids), list(ids)
    by_id = {i: s for s, i in a.items()}
    pairs = [(i, b[by_id[i]]) for i in ids if i in by_id and by_id[i] in b]
    return [p for p, _ in pairs], [s for _, s in pairs]
