"""A local registry of published fingerprints: one SQLite file (standard-library sqlite3).

Each entry is a fingerprint under a unique name: its spec, token ids, v and (for a plain FP.json
that carries them) the invariants and the per-head vectors, as float32 blobs so that `identify`
ranks thousands of them with one matrix product (the heads, entry by entry: fingerprint.heads).
An entry is *proven* when it was admitted from a proof bundle that verified (`verifier.verify_bundle`); it then records the bundle's commitment digest and the kind
of SRS the proof was checked under. A plain FP.json is stored as unproven. An entry may also
record where its published release is (`add_file(..., release=DIR)`, checked when added): `identify`
then scores a model suspect against that entry on the weights (`fingerprint.weights`).

The same fingerprint (same spec, token ids and v) is admitted once: adding it again is refused
with the name it is registered under, and nothing changes. Writers take SQLite's write lock at
the start of each transaction (BEGIN IMMEDIATE) and wait for it (busy timeout), so processes
adding at once neither lose nor corrupt an entry.

The schema version is SQLite's `user_version`; a `meta` table tags the file as a zkfp registry.
A file that is not one, or one written by a newer schema, is refused, never modified. An older
schema (1: before releases were recorded, 2: before token strings were, 3: before per-head
vectors were) is read as it is and upgraded when first opened for writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fingerprint.compare import SPEC_KEYS
from fingerprint.fpjson import Fingerprint
from zkfp.errors import RegistryError

FORMAT = "zkfp-registry"
SCHEMA_VERSION = 4  # 2: the release column; 3: the tokens column; 4: the heads column
_ADDED_COLUMNS = {2: "release TEXT", 3: "tokens TEXT", 4: "heads BLOB"}  # what each schema version added
_ENTRY_COLUMNS_ADDED = (2, 3)  # read with each entry; the heads are read with the other vectors
# SQLite pages of 64 KiB, not 4: a registry is read whole by identify, and its vectors (a 32-layer
# fingerprint's invariants: 96 KiB) then come in a few pages each, not a chain of two dozen
# (10,000 entries of 32 layers read in 311-431 ms against 421-494; benchmarks/identify_speed.py, README).
PAGE_SIZE = 65536
ENV = "ZKFP_REGISTRY"
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE fingerprints (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,          -- sha256 of (spec, token ids, v): the fingerprint's identity
    spec TEXT NOT NULL,                   -- JSON
    token_ids TEXT NOT NULL,              -- JSON list
    v BLOB NOT NULL,                      -- float32
    invariants BLOB,                      -- float32, NULL when the file had none (bundles never do)
    proven INTEGER NOT NULL,
    commitment_digest TEXT,
    srs_kind TEXT,
    model TEXT NOT NULL,                  -- JSON: what the file said about the model
    source TEXT NOT NULL,                 -- the file or bundle it was added from
    added_at REAL NOT NULL,
    release TEXT,                         -- the published release folder, if given when added (schema 2)
    tokens TEXT,                          -- JSON list: the token strings of token_ids, NULL if unknown (schema 3)
    heads BLOB                            -- float32 (layers, heads, 2k(k−1)), NULL when the file had none (schema 4)
);
CREATE INDEX fingerprints_by_tokens ON fingerprints (token_ids);
"""
_INSERT_COLUMNS = ("name, digest, spec, token_ids, v, invariants, proven, commitment_digest, srs_kind, model, source, "
                   "added_at, release, tokens, heads")


def default_path() -> Path:
    """$ZKFP_REGISTRY, else registry.sqlite in the user's data directory (XDG)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "zkfp" / "registry.sqlite"


@dataclass(frozen=True)
class Entry:
    name: str
    digest: str
    spec: dict
    token_ids: tuple[int, ...]
    proven: bool
    commitment_digest: str | None
    srs_kind: str | None
    model: dict
    source: str
    added_at: float
    release: str | None = None  # the published release folder, checked when the entry was added
    tokens: tuple[str, ...] | None = None  # the token strings of token_ids (fingerprint.tokens), when known
    bases: tuple[str, ...] = ("v",)  # what it can be compared on: v, and the invariants and heads where stored


@dataclass(frozen=True)
class Group:
    """Entries that can be compared with one suspect fingerprint: same spec, same token ids and strings."""
    spec: dict
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...] | None
    entries: list[Entry]
    v: np.ndarray                  # (n, m · layers) float32
    invariants: np.ndarray | None  # (entries that carry them, len) float32, in entry order
    has_invariants: np.ndarray     # (n,) bool: which entries carry invariants (the rows of `invariants`)
    heads: StoredHeads             # per entry, its (layers, heads, 2k(k−1)) float32 per-head vectors or None


class StoredHeads:
    """A group's per-head vectors, each entry's read from the registry when asked: a 7B-shaped
    entry's are 2 MiB, and identify scores only a group's best entries on them. `carries` says
    which entries have them (as of `groups()`); an entry removed since reads as None (an entry is
    found by its row, digest and time of adding: SQLite may give a removed entry's row to the next
    one added, and that may be the same fingerprint again, added with other heads)."""

    def __init__(self, read, rows: list[tuple[int, str, float]], carries: np.ndarray, spec: dict):
        self._read, self._rows, self.carries, self._spec = read, rows, carries, spec

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> np.ndarray | None:
        if not self.carries[i]:
            return None
        blob = self._read(*self._rows[i])
        return None if blob is None else _heads(blob, self._spec)


def fingerprint_digest(fp: Fingerprint) -> str:
    """Identity of a fingerprint: its spec, its token ids and v (as stored, float32)."""
    h = hashlib.sha256()
    h.update(json.dumps({k: fp.spec.get(k) for k in SPEC_KEYS}, sort_keys=True).encode())
    h.update(json.dumps([int(t) for t in fp.token_ids]).encode())
    h.update(np.asarray(fp.v, dtype="<f4").tobytes())
    return h.hexdigest()


class Registry:
    """An open registry file. `create=False` opens read-only and refuses a missing file."""

    def __init__(self, path: str | os.PathLike | None = None, create: bool = True):
        self.path = Path(path) if path is not None else default_path()
        if self.path.exists() and not self.path.is_file():
            raise RegistryError(f"registry path is not a file: {self.path}")
        if not create and not self.path.is_file():
            raise RegistryError(f"no registry at {self.path} (add a fingerprint first: zkfp registry add FILE)")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._db.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # takes effect only if this creates the file
        else:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._check_or_create(create)
        except BaseException:
            self._db.close()
            raise

    # -- opening -------------------------------------------------------------------------------
    def _check_or_create(self, create: bool) -> None:
        try:
            version, tables = self._schema_state()
            if version == 0 and not tables and create:
                with self._write():
                    version, tables = self._schema_state()  # another process may have created it meanwhile
                    if version == 0 and not tables:
                        for statement in _SCHEMA.split(";")[:-1]:  # not executescript: it would COMMIT
                            self._db.execute(statement)
                        self._db.execute("INSERT INTO meta VALUES ('format', ?), ('created_by', 'zkfp')", (FORMAT,))
                        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                version, tables = self._schema_state()
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"{self.path} is not a zkfp registry ({exc})") from None
        if 1 <= version < SCHEMA_VERSION and create:
            self._upgrade()
            version, tables = self._schema_state()
        if version > SCHEMA_VERSION:
            raise RegistryError(f"registry {self.path} was written by a newer zkfp (schema {version}; this zkfp "
                                f"reads schema {SCHEMA_VERSION}): upgrade zkfp to use it")
        if "meta" not in tables or self._format() != FORMAT or version < 1:
            raise RegistryError(f"{self.path} is not a zkfp registry (an SQLite file without the zkfp registry tag)")
        # read-only, an older file is read as it is: its entries record no release, tokens or heads
        self._columns = self._ENTRY_COLUMNS + "".join(
            ", " + (_ADDED_COLUMNS[v].split()[0] if version >= v else "NULL") for v in _ENTRY_COLUMNS_ADDED)
        self._heads = "heads" if version >= 4 else "NULL"
        self._columns += f", length(invariants) IS NOT NULL, length({self._heads}) IS NOT NULL"  # Entry.bases

    def _upgrade(self) -> None:
        if self._format() != FORMAT:
            return  # not ours: refused below, untouched
        with self._write():
            version = self._schema_state()[0]  # another process may have upgraded it meanwhile
            for v, column in sorted(_ADDED_COLUMNS.items()):
                if version < v:
                    self._db.execute(f"ALTER TABLE fingerprints ADD COLUMN {column}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _schema_state(self) -> tuple[int, set[str]]:
        """The schema version and the tables, read in one snapshot. Read apart, a process creating
        the registry between the two reads shows its tables with version 0: a foreign file."""
        own = not self._db.in_transaction
        if own:
            self._db.execute("BEGIN")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            if own and self._db.in_transaction:
                self._db.execute("COMMIT")
        return version, tables

    def _format(self) -> str | None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except sqlite3.DatabaseError:
            return None
        return row[0] if row else None

    def _write(self):
        """A write transaction that holds the lock from its start (BEGIN IMMEDIATE)."""
        return _Transaction(self._db, self.path)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- changing ------------------------------------------------------------------------------
    def add(self, fp: Fingerprint, name: str, *, source: str, proven: bool = False,
            commitment_digest: str | None = None, srs_kind: str | None = None, release: str | None = None) -> Entry:
        """Store `fp` under `name`; refuse a taken name or a fingerprint already registered."""
        if not name or name != name.strip():
            raise RegistryError(f"invalid entry name {name!r}")
        digest = fingerprint_digest(fp)
        v = np.asarray(fp.v, dtype="<f4").tobytes()
        invs, heads = (None if x is None else np.asarray(x, dtype="<f4").tobytes() for x in (fp.invariants, fp.heads))
        row = (name, digest, json.dumps(fp.spec, sort_keys=True), json.dumps([int(t) for t in fp.token_ids]), v,
               invs, int(proven), commitment_digest, srs_kind, json.dumps(fp.model, sort_keys=True), source,
               time.time(), release, None if fp.tokens is None else json.dumps(list(fp.tokens)), heads)
        with self._write():
            same = self._db.execute("SELECT name FROM fingerprints WHERE digest = ?", (digest,)).fetchone()
            if same:
                raise RegistryError(f"this fingerprint is already registered as {same[0]!r}; nothing added")
            if self._db.execute("SELECT 1 FROM fingerprints WHERE name = ?", (name,)).fetchone():
                raise RegistryError(f"the name {name!r} is taken in {self.path}; choose another with --name")
            self._db.execute(f"INSERT INTO fingerprints ({_INSERT_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)
        return self.get(name)

    def remove(self, name: str) -> None:
        with self._write():
            if self._db.execute("DELETE FROM fingerprints WHERE name = ?", (name,)).rowcount == 0:
                raise RegistryError(f"no entry named {name!r} in {self.path}")

    # -- reading -------------------------------------------------------------------------------
    _ENTRY_COLUMNS = "name, digest, spec, token_ids, proven, commitment_digest, srs_kind, model, source, added_at"

    def entries(self) -> list[Entry]:
        rows = self._db.execute(f"SELECT {self._columns} FROM fingerprints ORDER BY added_at, name")
        return [_entry(r) for r in rows]

    def get(self, name: str) -> Entry:
        row = self._db.execute(f"SELECT {self._columns} FROM fingerprints WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise RegistryError(f"no entry named {name!r} in {self.path}")
        return _entry(row)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM fingerprints").fetchone()[0]

    def groups(self) -> list[Group]:
        """Every entry with its vectors, grouped by (spec, token ids, token strings): one matrix per group.

        Two reads in one snapshot: the entries, which size each group's matrices, then the vectors,
        each copied into its row as it arrives. Holding every blob and joining them would touch the
        vectors' memory twice (10,000 fingerprints of a 32-layer model: 180 MiB). The per-head
        vectors are not read here: `Group.heads` reads an entry's when asked."""
        with self._snapshot():
            rows = self._db.execute(f"SELECT rowid, {self._columns}, length(v), length(invariants) FROM fingerprints")
            by_key: dict[tuple[str, str, str], list] = {}
            for r in rows:
                by_key.setdefault((r[4], r[3], r[12] or ""), []).append(r)
            parsed: dict[str, object] = {}  # one json.loads per distinct spec, token list and model text
            groups, slots = [], {}
            for _key, members in sorted(by_key.items()):
                group, vector_rows = _empty_group(members, parsed, self._stored_heads)
                groups.append(group)
                slots.update(vector_rows)
            for rowid, v, invariants in self._db.execute("SELECT rowid, v, invariants FROM fingerprints"):
                v_row, invariants_row = slots[rowid]
                v_row[:] = np.frombuffer(v, dtype="<f4")
                if invariants_row is not None:
                    invariants_row[:] = np.frombuffer(invariants, dtype="<f4")
        return groups

    def _stored_heads(self, rowid: int, digest: str, added_at: float) -> bytes | None:
        try:
            row = self._db.execute(f"SELECT {self._heads} FROM fingerprints WHERE rowid = ? AND digest = ? "
                                   "AND added_at = ?", (rowid, digest, added_at)).fetchone()
        except sqlite3.ProgrammingError:
            raise RegistryError(f"registry {self.path} is closed: read a group's heads while it is open") from None
        except sqlite3.Error as exc:
            raise RegistryError(f"could not read registry {self.path}: {exc}") from None
        return None if row is None else row[0]

    def _snapshot(self) -> _Transaction:
        """A read transaction: what it reads is one state of the file, whatever others write meanwhile."""
        return _Transaction(self._db, self.path, "BEGIN")


class _Transaction:
    """BEGIN IMMEDIATE (a write) or BEGIN (a read: one snapshot) … COMMIT (ROLLBACK on any error);
    SQLite failures become RegistryErrors."""

    def __init__(self, db: sqlite3.Connection, path: Path, begin: str = "BEGIN IMMEDIATE"):
        self.db, self.path, self.begin = db, path, begin
        self.doing = "write" if begin == "BEGIN IMMEDIATE" else "read"

    def __enter__(self) -> None:
        try:
            self.db.execute(self.begin)
        except sqlite3.OperationalError as exc:
            raise RegistryError(f"registry {self.path} stayed locked by another process for "
                                f"{BUSY_TIMEOUT_S:.0f} s ({exc}); try again") from None

    def __exit__(self, exc_type, exc, _tb) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        except sqlite3.Error as failed:
            raise RegistryError(f"could not {self.doing} registry {self.path}: {failed}") from None
        if isinstance(exc, sqlite3.Error):
            raise RegistryError(f"could not {self.doing} registry {self.path}: {exc}") from None


def _entry(r, parsed: dict | None = None) -> Entry:
    """An Entry from a row; `parsed` memoises the JSON texts that many rows share (read-only use)."""
    name, digest, spec, ids, proven, commitment, srs_kind, model, source, added, release, tokens, *stored = r[:14]
    def load(text: str):
        if parsed is None:
            return json.loads(text)
        if text not in parsed:
            parsed[text] = json.loads(text)
        return parsed[text]

    return Entry(name=name, digest=digest, spec=load(spec), token_ids=tuple(load(ids)), proven=bool(proven),
                 commitment_digest=commitment, srs_kind=srs_kind, model=load(model), source=source, added_at=added,
                 release=release, tokens=None if tokens is None else tuple(load(tokens)),
                 bases=("v", *(b for b, has in zip(("invariants", "heads"), stored) if has)))


def _empty_group(rows: list, parsed: dict, read_heads) -> tuple[Group, dict[int, tuple]]:
    """A Group of the entry rows (rowid, columns…, length(v), length(invariants)) with its matrices
    allocated, not filled, and its heads read by `read_heads(rowid, digest, added_at)` when asked;
    and each entry's rowid → its row of `v` and of `invariants` (None: it has none)."""
    entries = [_entry(r[1:], parsed) for r in rows]
    has = np.array([r[-1] is not None for r in rows])
    invariants = None
    if has.any():  # only the entries that carry them: a v-only entry (a bundle's) costs nothing here
        invariants = np.empty((int(has.sum()), _floats([r[-1] for r in rows if r[-1] is not None], "invariants")),
                              dtype="<f4")
    group = Group(spec=entries[0].spec, token_ids=entries[0].token_ids, tokens=entries[0].tokens, entries=entries,
                  v=np.empty((len(rows), _floats([r[-2] for r in rows], "v")), dtype="<f4"),
                  invariants=invariants, has_invariants=has,
                  heads=StoredHeads(read_heads, [(r[0], e.digest, e.added_at) for r, e in zip(rows, entries)],
                                    np.array(["heads" in e.bases for e in entries]), entries[0].spec))
    invariant_rows = iter(() if invariants is None else invariants)
    return group, {r[0]: (v_row, next(invariant_rows) if carries else None)
                   for r, v_row, carries in zip(rows, group.v, has)}


def _heads(blob: bytes, spec_: dict) -> np.ndarray:
    """An entry's per-head vectors, (layers, heads, 2k(k−1)) float32."""
    from fingerprint.spec import head_length

    per_layer = int(spec_["layers"]) * head_length(int(spec_["k"]))
    if len(blob) % (4 * per_layer):
        raise RegistryError(f"an entry stores per-head vectors of {len(blob)} bytes, not whole heads: "
                            "the registry is corrupt")
    return np.frombuffer(blob, dtype="<f4").reshape(int(spec_["layers"]), -1, head_length(int(spec_["k"])))


def _floats(byte_lengths: list[int], what: str) -> int:
    """The float32 count of a vector that every entry of one spec stores at the same length."""
    lengths = set(byte_lengths)
    if len(lengths) != 1:
        raise RegistryError(f"entries of one spec store {what} of different lengths ({sorted(lengths)} bytes): "
                            "the registry is corrupt")
    return lengths.pop() // 4


def add_file(registry: Registry, path: str | os.PathLike, name: str | None = None, *, srs=None,
             allow_dev_srs: bool = False, release: str | os.PathLike | None = None) -> Entry:
    """Add a proof bundle (verified first; refused, and nothing stored, unless it is valid) or an
    FP.json (stored as unproven). The name defaults to the bundle folder's or the file's stem.

    `release`: the published release (or model) folder, recorded so that `identify` can compare
    suspects on the weights. It is checked first: a bundle must verify against it (its
    commitments), an FP.json's v must be the release's own (`identify.release_fingerprint`). The
    entry's invariants and per-head vectors are then computed here from the release, not taken
    from the file: a bundle holds v only (the proof covers v), and these come from the very weights
    its commitments bind, so that a proven entry of a model with a tied head can be scored on its
    heads (README, "Tied heads")."""
    from fingerprint import fpjson

    path = Path(path)
    name = name or (path.name if path.is_dir() else path.stem)
    if release is not None and not Path(release).is_dir():
        raise RegistryError(f"the release {release} is not a folder; nothing added")
    recorded = None if release is None else str(Path(release).resolve())
    if fpjson.is_bundle(path):
        from verifier.verify import verify_bundle

        res = verify_bundle(path, release, srs=srs, allow_dev_srs=allow_dev_srs)
        if not res.ok:
            against = f" against the release {release}" if release is not None else ""
            raise RegistryError(f"bundle {path} did not verify{against} ({res.status}: {'; '.join(res.reasons)}); "
                                "nothing added")
        fp = fpjson.from_json(fpjson.bundle_fingerprint_json(path, v=res.v), f"bundle {path}")
        return registry.add(_with_release_bases(fp, release, path), name, source=str(path), proven=True,
                            commitment_digest=res.commitment_digest, srs_kind=res.checks.get("srs", {}).get("kind"),
                            release=recorded)
    if path.is_dir():
        raise RegistryError(f"{path} is a folder but not a proof bundle: register a bundle or an FP.json "
                            "(fingerprint a model with zkfp fingerprint MODEL --out FP.json)")
    fp = _with_release_bases(fpjson.load(path), release, path)
    return registry.add(fp, name, source=str(path), release=recorded)


def _with_release_bases(fp, release: str | os.PathLike | None, path: Path):
    """`fp` with the invariants and per-head vectors of `release` (computed here on fp's token ids),
    and whether the release ties its head (a file made before may not say), once the release's own v
    is checked to be fp's; `fp` as it is without a release."""
    if release is None:
        return fp
    import dataclasses

    from fingerprint.identify import release_fingerprint

    mine = release_fingerprint(release, fp.token_ids, np.asarray(fp.v))
    if mine is None:
        raise RegistryError(f"{release} is not the model of {path}: its fingerprint on the file's token ids "
                            "differs; nothing added")
    model = {**fp.model, "tied_embeddings": mine.model["tied_embeddings"]}  # the release's config decides
    return dataclasses.replace(fp, invariants=mine.invariants, heads=mine.heads, model=model)
