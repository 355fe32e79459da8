"""compare without flags, the fingerprint registry, identify and its HTML report, and every refusal."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fingerprint import spec
from fingerprint.compare import compare
from fingerprint.fpjson import Fingerprint, load, save
from fingerprint.registry import PAGE_SIZE, SCHEMA_VERSION, Registry, add_file, default_path
from zkfp.errors import RegistryError

REPO = Path(__file__).resolve().parent.parent


def zkfp(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zkfp.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env)


def synthetic(seed: int, token_ids=None, like: Fingerprint | None = None, noise: float = 0.0,
              invariants: bool = True, layers: int = 3, tokens: list[str] | None = None) -> Fingerprint:
    """A well-formed fingerprint with Gaussian vectors (or `like`'s plus noise): for registry logic."""
    g = np.random.default_rng(seed)
    layers = like.layers if like is not None else layers
    n, m = spec.invariant_length(layers), spec.M_DIM * layers
    v = g.standard_normal(m) if like is None else np.asarray(like.v) + noise * g.standard_normal(m)
    z = g.standard_normal(n) if like is None else np.asarray(like.invariants) + noise * g.standard_normal(n)
    ids = token_ids if token_ids is not None else (like.token_ids if like else spec.select_tokens(4096))
    return Fingerprint(spec=spec.spec_dict(layers), token_ids=list(ids), v=[float(x) for x in v],
                       invariants=[float(x) for x in z] if invariants else None, model={"family": "synthetic"},
                       tokens=tokens)


@pytest.fixture(scope="module")
def extended(llama, tmp_path_factory):
    """The llama with its vocabulary extended (new rows appended, as multilingual derivatives do)."""
    from transformers import AutoModelForCausalLM

    from zkfp.zoo.tiny import save as save_model

    model = AutoModelForCausalLM.from_pretrained(llama)
    model.resize_token_embeddings(model.config.vocab_size + 88)
    return save_model(model, tmp_path_factory.mktemp("extended") / "model")


@pytest.fixture
def unsupported(llama, tmp_path):
    cfg = json.loads((llama / "config.json").read_text())
    out = tmp_path / "t5"
    shutil.copytree(llama, out)
    (out / "config.json").write_text(json.dumps(dict(cfg, model_type="t5", architectures=["T5Model"])))
    return out


# -- compare -----------------------------------------------------------------------------------
def test_comparing_two_fp_json_files_imports_numpy_but_not_torch(tmp_path):
    save(synthetic(1), tmp_path / "a.json")
    save(synthetic(2, like=synthetic(1), noise=0.1), tmp_path / "b.json")
    code = ("import sys; from zkfp.cli import main; rc = main(['compare', sys.argv[1], sys.argv[2], '--json']); "
            "assert 'torch' not in sys.modules, 'torch was imported'; assert 'numpy' in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, tmp_path / "a.json", tmp_path / "b.json"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["basis"] == "invariants" and out["verdict"] == "same-lineage" and not out["suspect_fingerprinted"]


def test_compare_is_hurefs_cosine_per_aligned_layer_on_invariants_else_v():
    a = synthetic(1)
    b = synthetic(2, like=a, noise=0.5)
    r = compare(a, b)
    x, y = a.layer_invariants(), b.layer_invariants()
    per_layer = [100 * x[i] @ y[i] / np.linalg.norm(x[i]) / np.linalg.norm(y[i]) for i in range(a.layers)]
    assert r["basis"] == "invariants" and [p[:2] for p in r["layers"]["aligned"]] == [[i, i] for i in range(a.layers)]
    assert r["similarity"] == pytest.approx(np.mean(per_layer), abs=1e-3)
    assert compare(a, synthetic(2))["verdict"] == "unrelated"
    r = compare(a, synthetic(3, like=a, noise=0.01, invariants=False))
    assert r["basis"] == "v" and r["similarity"] > 99 and r["verdict"] == "same-lineage"


def test_compare_fingerprints_a_vocabulary_extension_on_the_published_tokens(llama, extended, tmp_path):
    """The extension's own token choice differs (the range grew), so only the published ids compare."""
    from fingerprint.extract import extract

    save(extract(llama), tmp_path / "published.json")
    assert extract(extended).token_ids != load(tmp_path / "published.json").token_ids
    r = zkfp("compare", tmp_path / "published.json", extended, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["suspect_fingerprinted"] and out["basis"] == "heads"
    assert out["verdict"] == "same-lineage" and out["similarity"] >= 99.9  # the old rows are untouched
    r = zkfp("compare", tmp_path / "published.json", extended)
    assert r.returncode == 0 and "fingerprinted" in r.stdout and "same-lineage" in r.stdout


def test_compare_with_a_release_suspect(llama, tmp_path):
    taylor = pytest.importorskip("taylor")
    from fingerprint.extract import extract

    release = taylor.protect(llama, tmp_path / "release")
    save(extract(llama), tmp_path / "published.json")
    out = json.loads(zkfp("compare", tmp_path / "published.json", release, "--json").stdout)
    assert out["suspect_fingerprinted"] and out["verdict"] == "same-lineage" and out["similarity"] >= 99.9


def test_a_suspect_of_an_unsupported_architecture_is_refused(unsupported, tmp_path):
    save(synthetic(1, token_ids=spec.select_tokens(512)), tmp_path / "published.json")
    r = zkfp("compare", tmp_path / "published.json", unsupported)
    assert r.returncode == 2 and "unsupported architecture" in r.stderr and "Traceback" not in r.stderr
    reg = tmp_path / "r.sqlite"
    assert zkfp("registry", "add", tmp_path / "published.json", "--registry", reg).returncode == 0
    r = zkfp("identify", unsupported, "--registry", reg)
    assert r.returncode == 2 and "unsupported architecture" in r.stderr and "Traceback" not in r.stderr


# -- the registry ------------------------------------------------------------------------------
def test_default_path_honours_the_env_var_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("ZKFP_REGISTRY", str(tmp_path / "env.sqlite"))
    assert default_path() == tmp_path / "env.sqlite"
    monkeypatch.delenv("ZKFP_REGISTRY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_path() == tmp_path / "data" / "zkfp" / "registry.sqlite"


def test_add_list_remove_and_the_schema_version(tmp_path):
    save(synthetic(1), tmp_path / "base.json")
    save(synthetic(2, invariants=False), tmp_path / "other.json")
    reg = tmp_path / "r.sqlite"
    r = zkfp("registry", "add", tmp_path / "base.json", "--registry", reg)
    assert r.returncode == 0 and "unproven" in r.stdout, r.stderr
    assert zkfp("registry", "add", tmp_path / "other.json", "--name", "rival", "--registry", reg).returncode == 0
    listed = json.loads(zkfp("registry", "list", "--json", "--registry", reg).stdout)
    assert [(e["name"], e["proven"], e["bases"]) for e in listed] == [("base", False, ["v", "invariants"]),
                                                                      ("rival", False, ["v"])]
    assert "\tv+invariants\t" in zkfp("registry", "list", "--registry", reg).stdout
    with sqlite3.connect(reg) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert zkfp("registry", "remove", "rival", "--registry", reg).returncode == 0
    assert [e["name"] for e in json.loads(zkfp("registry", "list", "--json", "--registry", reg).stdout)] == ["base"]
    r = zkfp("registry", "remove", "rival", "--registry", reg)
    assert r.returncode == 2 and "no entry named 'rival'" in r.stderr


def test_default_registry_comes_from_the_environment(tmp_path):
    save(synthetic(1), tmp_path / "a.json")
    env = dict(os.environ, ZKFP_REGISTRY=str(tmp_path / "from-env.sqlite"))
    assert zkfp("registry", "add", tmp_path / "a.json", env=env).returncode == 0
    assert (tmp_path / "from-env.sqlite").is_file()
    assert "1 fingerprint(s)" in zkfp("registry", "list", env=env).stdout


def test_the_same_fingerprint_twice_is_refused_and_nothing_changes(tmp_path):
    save(synthetic(1), tmp_path / "a.json")
    reg = tmp_path / "r.sqlite"
    assert zkfp("registry", "add", tmp_path / "a.json", "--registry", reg).returncode == 0
    r = zkfp("registry", "add", tmp_path / "a.json", "--name", "again", "--registry", reg)
    assert r.returncode == 2 and "already registered as 'a'" in r.stderr and "nothing added" in r.stderr
    save(synthetic(2), tmp_path / "b.json")
    r = zkfp("registry", "add", tmp_path / "b.json", "--name", "a", "--registry", reg)
    assert r.returncode == 2 and "name 'a' is taken" in r.stderr
    with Registry(reg) as db:
        assert [e.name for e in db.entries()] == ["a"]


def test_a_file_that_is_not_a_registry_is_refused_and_left_alone(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all " * 100)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    save(synthetic(1), tmp_path / "a.json")
    for path in (junk, other):
        before = path.read_bytes()
        for args in (("registry", "add", tmp_path / "a.json"), ("registry", "list"), ("identify", tmp_path / "a.json")):
            r = zkfp(*args, "--registry", path)
            assert r.returncode == 2 and "is not a zkfp registry" in r.stderr, (args, r.stderr)
            assert "Traceback" not in r.stderr
        assert path.read_bytes() == before
    with pytest.raises(RegistryError, match="no registry at"):
        Registry(tmp_path / "missing.sqlite", create=False)


def test_a_registry_from_a_newer_schema_is_refused(tmp_path):
    reg = tmp_path / "r.sqlite"
    with Registry(reg) as db:
        db.add(synthetic(1), "a", source="test")
    with sqlite3.connect(reg) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    save(synthetic(2), tmp_path / "b.json")
    r = zkfp("registry", "add", tmp_path / "b.json", "--registry", reg)
    assert r.returncode == 2 and "newer zkfp" in r.stderr and f"schema {SCHEMA_VERSION + 1}" in r.stderr
    r = zkfp("registry", "list", "--registry", reg)
    assert r.returncode == 2 and "newer zkfp" in r.stderr


@pytest.mark.parametrize("version, missing", [(1, ("release", "tokens", "heads")), (2, ("tokens", "heads")),
                                              (3, ("heads",))])
def test_an_older_registry_is_read_as_it_is_and_upgraded_when_written(tmp_path, version, missing):
    """Schema 1 (before releases were recorded), 2 (before token strings were) and 3 (before
    per-head vectors were): read-only use leaves the file alone; the first write adds the missing
    columns and keeps every entry."""
    reg = tmp_path / "r.sqlite"
    with Registry(reg) as db:
        db.add(synthetic(1), "old", source="test")
    with sqlite3.connect(reg) as db:  # the file as the previous zkfp wrote it (its columns, not its constraints)
        kept = [r[1] for r in db.execute("PRAGMA table_info(fingerprints)") if r[1] not in missing]
        db.execute(f"CREATE TABLE earlier AS SELECT {', '.join(kept)} FROM fingerprints")
        db.execute("DROP TABLE fingerprints")
        db.execute("ALTER TABLE earlier RENAME TO fingerprints")
        db.execute(f"PRAGMA user_version = {version}")
    before = reg.read_bytes()
    with Registry(reg, create=False) as db:
        assert [(e.name, e.release, e.tokens) for e in db.entries()] == [("old", None, None)]
        assert [(e.name, h) for g in db.groups() for e, h in zip(g.entries, g.heads)] == [("old", None)]
    assert reg.read_bytes() == before
    with Registry(reg) as db:
        db.add(synthetic(2, tokens=[f"t{i}" for i in range(spec.K_TOKENS)]), "new", source="test", release="/somewhere")
        assert [(e.name, e.release, e.tokens and e.tokens[0]) for e in db.entries()] == [
            ("old", None, None), ("new", "/somewhere", "t0")]
    with sqlite3.connect(reg) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


def test_a_new_registry_has_large_pages_and_an_existing_one_keeps_its_own(tmp_path):
    """identify reads a registry whole: its vectors come in a few 64 KiB pages each. A file made
    with SQLite's default 4 KiB pages (an earlier zkfp's) is read and written as it is."""
    with Registry(tmp_path / "new.sqlite") as db:
        db.add(synthetic(1), "a", source="test")
    with sqlite3.connect(tmp_path / "old.sqlite") as db:
        db.execute("PRAGMA page_size = 4096")
        db.execute("VACUUM")
    with Registry(tmp_path / "old.sqlite") as db:
        db.add(synthetic(1), "a", source="test")
        assert [e.name for g in db.groups() for e in g.entries] == ["a"]
    sizes = {name: sqlite3.connect(tmp_path / name).execute("PRAGMA page_size").fetchone()[0]
             for name in ("new.sqlite", "old.sqlite")}
    assert sizes == {"new.sqlite": PAGE_SIZE, "old.sqlite": 4096} and PAGE_SIZE == 65536


def test_a_folder_that_is_neither_a_bundle_nor_a_file_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    with Registry(tmp_path / "r.sqlite") as reg, pytest.raises(RegistryError, match="not a proof bundle"):
        add_file(reg, tmp_path / "model")


_ADDER = """
import sys
from fingerprint.fpjson import load
from fingerprint.registry import Registry
from zkfp.errors import RegistryError
reg_path, *files = sys.argv[1:]
for f in files:
    try:
        with Registry(reg_path) as reg:  # a connection per add: the most contention, schema creation included
            reg.add(load(f), f.rsplit('/', 1)[-1], source=f)
        print('added', f)
    except RegistryError as exc:
        print('refused', f, exc)
"""


def test_processes_adding_at_once_lose_and_corrupt_nothing(tmp_path):
    files = []
    for i in range(24):
        save(synthetic(i), tmp_path / f"fp{i}.json")
        files.append(str(tmp_path / f"fp{i}.json"))
    reg = str(tmp_path / "fresh.sqlite")
    # four writers with six fingerprints each, and two more racing to add the same one
    jobs = [files[i::4] for i in range(4)] + [[files[0]], [files[0]]]
    procs = [subprocess.Popen([sys.executable, "-c", _ADDER, reg, *job], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for job in jobs]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    lines = [line for out, _ in outs for line in out.splitlines()]
    assert sum(line.startswith("added") for line in lines) == 24, [line for line in lines if line.startswith("refused")]
    refused = [line for line in lines if line.startswith("refused")]
    assert len(refused) == 2 and all("already registered" in line for line in refused)
    with Registry(reg, create=False) as db:
        assert sorted(e.name for e in db.entries()) == sorted(f"fp{i}.json" for i in range(24))
        groups = db.groups()
    with sqlite3.connect(reg) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {e.name: groups[0].v[i] for i, e in enumerate(groups[0].entries)}
    for f in files:  # every vector arrived whole
        np.testing.assert_array_equal(stored[Path(f).name], np.asarray(load(f).v, dtype=np.float32))


def test_a_registry_created_by_another_process_while_it_is_opened_is_not_taken_for_a_foreign_file(
        tmp_path, monkeypatch):
    """Opening reads the schema version, then the tables. If another process created the registry
    between the two reads, the file showed tables at version 0 and was refused as "not a zkfp
    registry" (one of the racing adds above, once in CI): both are read in one snapshot."""
    import threading

    reg = tmp_path / "r.sqlite"
    real_connect, created, failures = sqlite3.connect, [], []

    def create_elsewhere():
        try:
            Registry(reg).close()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    class CreatedAfterTheFirstRead:
        def __init__(self, db):
            self._db = db

        def execute(self, sql, *args):
            cursor = self._db.execute(sql, *args)
            if sql == "PRAGMA user_version" and not created:
                created.append(threading.Thread(target=create_elsewhere))
                created[0].start()
                created[0].join(timeout=2)  # done at once, unless this connection's snapshot holds it back
            return cursor

        def __getattr__(self, name):
            return getattr(self._db, name)

    def connect(*args, **kwargs):  # the first connection is the one under test; the creator's is plain
        created_by_now = bool(created)
        db = real_connect(*args, **kwargs)
        return db if created_by_now else CreatedAfterTheFirstRead(db)

    monkeypatch.setattr(sqlite3, "connect", connect)
    with Registry(reg) as db:
        assert len(db) == 0
    created[0].join()
    assert not failures, failures
    monkeypatch.undo()
    with Registry(reg, create=False) as db:
        assert db.entries() == []


def test_a_registry_locked_too_long_is_a_clear_error(tmp_path, monkeypatch):
    import fingerprint.registry as R

    reg = tmp_path / "r.sqlite"
    Registry(reg).close()
    monkeypatch.setattr(R, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(reg, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer that does not let go
    try:
        with Registry(reg) as db, pytest.raises(RegistryError, match="stayed locked by another process"):
            db.add(synthetic(1), "a", source="test")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Registry(reg) as db:
        assert len(db) == 0


# -- identify ----------------------------------------------------------------------------------
def _registry_of(tmp_path, fps: dict) -> Path:
    reg = tmp_path / "r.sqlite"
    with Registry(reg) as db:
        for name, fp in fps.items():
            db.add(fp, name, source="test")
    return reg


def test_groups_hold_each_entrys_vectors_in_its_row(tmp_path):
    fps = {f"e{i}": synthetic(i, invariants=i % 3 != 1, layers=2 + i % 2) for i in range(7)}  # two depths, mixed
    with Registry(_registry_of(tmp_path, fps), create=False) as db:
        groups = db.groups()
    assert sorted(e.name for g in groups for e in g.entries) == sorted(fps) and len(groups) == 2
    for g in groups:
        for i, e in enumerate(g.entries):
            fp = fps[e.name]
            assert g.spec["layers"] == fp.layers and g.has_invariants[i] == (fp.invariants is not None)
            np.testing.assert_array_equal(g.v[i], np.asarray(fp.v, dtype=np.float32))
            if fp.invariants is not None:  # `invariants` has rows only for the entries that carry them
                row = int(g.has_invariants[:i].sum())
                np.testing.assert_array_equal(g.invariants[row], np.asarray(fp.invariants, dtype=np.float32))


def test_identify_ranks_every_entry_as_compare_would(tmp_path):
    from fingerprint.identify import identify

    base = synthetic(1)
    fps = {"base": base, "child": synthetic(2, like=base, noise=0.6), "stranger": synthetic(3),
           "v-only": synthetic(4, like=base, noise=0.3, invariants=False),
           "other-tokens": synthetic(5, token_ids=spec.select_tokens(4096, salt="other"))}
    reg = _registry_of(tmp_path, fps)
    suspect = synthetic(6, like=base, noise=0.4)
    save(suspect, tmp_path / "suspect.json")
    with Registry(reg, create=False) as db:
        ident = identify(tmp_path / "suspect.json", db)
    by_name = {m.name: m for m in ident.matches}
    for name in ("base", "child", "stranger", "v-only"):
        expected = compare(fps[name], suspect)
        assert by_name[name].similarity == pytest.approx(expected["similarity"], abs=1e-3)
        assert (by_name[name].basis, by_name[name].verdict) == (expected["basis"], expected["verdict"])
    assert by_name["other-tokens"].similarity is None and "other token ids" in by_name["other-tokens"].reason
    assert ident.matches[-1].name == "other-tokens"  # not comparable: last
    z = [m.z for m in ident.matches[:-1]]
    assert z == sorted(z, reverse=True) and ident.matches[0].name == "base"
    out = json.loads(zkfp("identify", tmp_path / "suspect.json", "--registry", reg, "--json").stdout)
    assert [m["name"] for m in out["matches"]] == [m.name for m in ident.matches]


def test_identify_judges_an_entry_that_ties_its_head_by_the_plain_thresholds(tmp_path):
    from dataclasses import replace

    from fingerprint.identify import identify

    base = synthetic(1)
    tied = replace(synthetic(3, like=base, noise=1.0), model={"family": "synthetic", "tied_embeddings": True})
    reg = _registry_of(tmp_path, {"untied": synthetic(2, like=base, noise=1.0), "tied": tied})
    save(base, tmp_path / "suspect.json")
    with Registry(reg, create=False) as db:
        by_name = {m.name: m for m in identify(tmp_path / "suspect.json", db).matches}
    assert all(60 < m.similarity < 80 and m.basis == "invariants" for m in by_name.values())
    assert (by_name["untied"].verdict, by_name["tied"].verdict) == ("same-lineage", "inconclusive")
    assert by_name["tied"].verdict == compare(tied, base)["verdict"]


def test_identify_bounds_the_false_positive_rate_over_every_compared_entry(tmp_path):
    from fingerprint.identify import identify

    fps = {f"stranger-{i}": synthetic(10 + i, invariants=i % 2 == 0) for i in range(6)}
    fps["other-tokens"] = synthetic(5, token_ids=spec.select_tokens(4096, salt="other"))
    reg = _registry_of(tmp_path, fps)
    save(synthetic(6), tmp_path / "suspect.json")
    with Registry(reg, create=False) as db:
        ident = identify(tmp_path / "suspect.json", db)
    per_entry = {m.name: m.false_positive_rate for m in ident.matches}
    for name, fp in fps.items():  # each entry spends its basis' rate; one not compared spends none
        expected = 0.0 if name == "other-tokens" else compare(fp, synthetic(6))["false_positive_rate"]
        assert per_entry[name] == pytest.approx(expected)
    assert ident.false_positive_bound() == pytest.approx(sum(per_entry.values())) and ident.false_positive_bound() > 0
    out = zkfp("identify", tmp_path / "suspect.json", "--registry", reg)
    assert f"≤ {ident.false_positive_bound():.1e}" in out.stdout and "all 6 compared entries" in out.stdout
    assert json.loads(zkfp("identify", tmp_path / "suspect.json", "--registry", reg, "--json").stdout)[
        "false_positive_bound"] == pytest.approx(ident.false_positive_bound())


def test_identify_fingerprints_a_model_once_per_registered_token_list(llama, extended, tmp_path, monkeypatch):
    from fingerprint import extract as E
    from fingerprint.identify import identify

    published = E.extract(llama)
    ids_other = spec.select_tokens(512, salt="another-publisher")
    reg = _registry_of(tmp_path, {"base": published, "base-other-ids": E.extract(llama, token_ids=ids_other),
                                  "stranger": synthetic(9, token_ids=published.token_ids)})
    calls = []
    real = E.extract
    monkeypatch.setattr(E, "extract", lambda path, token_ids=None, **kw: calls.append(token_ids) or real(
        path, token_ids=token_ids, **kw))
    with Registry(reg, create=False) as db:
        ident = identify(extended, db)
    assert sorted(map(tuple, calls)) == sorted([tuple(published.token_ids), tuple(ids_other)])
    top = {m.name: m for m in ident.matches}
    assert top["base"].verdict == top["base-other-ids"].verdict == "same-lineage"
    assert top["base"].similarity >= 99.9 and top["stranger"].verdict == "unrelated"
    assert ident.matches[-1].name == "stranger"


def _screenshot_contains(shot: np.ndarray, image: np.ndarray) -> float:
    """Smallest mean absolute pixel difference between `image` and any same-sized crop of `shot`
    (located by FFT correlation of the squared difference)."""
    from scipy.signal import fftconvolve

    s, t = shot.astype(np.float64).mean(axis=2), image.astype(np.float64).mean(axis=2)
    ssd = (fftconvolve(s ** 2, np.ones_like(t), mode="valid") - 2 * fftconvolve(s, t[::-1, ::-1], mode="valid")
           + (t ** 2).sum())
    y, x = np.unravel_index(np.argmin(ssd), ssd.shape)
    crop = shot[y:y + image.shape[0], x:x + image.shape[1]].astype(np.float64)
    return float(np.abs(crop - image.astype(np.float64)).mean())


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs headless chromium (apt-get install chromium)")
def test_html_report_shows_the_suspect_beside_its_best_matches_in_a_browser(tmp_path):
    from PIL import Image

    from fingerprint.render import render

    base = synthetic(1)
    reg = _registry_of(tmp_path, {"base <model>": base, "stranger": synthetic(3)})
    suspect = synthetic(6, like=base, noise=0.4)
    save(suspect, tmp_path / "suspect.json")
    report = tmp_path / "report.html"
    r = zkfp("identify", tmp_path / "suspect.json", "--registry", reg, "--html", report)
    assert r.returncode == 0, r.stderr
    text = report.read_text()
    assert "http:" not in text and "https:" not in text and "<script" not in text  # self-contained
    chrome = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--force-device-scale-factor=1",
              "--hide-scrollbars"]
    dom = subprocess.run([*chrome, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('src="data:image/png;base64,') == 3  # the suspect and both matches
    assert "base &lt;model&gt;" in dom and "same-lineage" in dom and "unrelated" in dom
    assert "the implied chance that one is still called same-lineage is at most" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*chrome, "--window-size=1400,1000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    for v in (suspect.v, base.v):  # each image decoded and displayed at its size
        assert _screenshot_contains(pixels, np.asarray(render(v).convert("RGB"))) < 3.0
    assert _screenshot_contains(pixels, np.asarray(render(synthetic(42).v).convert("RGB"))) > 10.0  # not shown


# -- proven entries (the session's proof of the embedded model, tests/conftest.py) ----------------
@pytest.mark.slow
def test_a_bundle_is_verified_then_registered_as_proven_and_identifies_its_model(bundle, llama, tmp_path):
    from fingerprint.extract import extract
    from zkfp.zoo import embedded

    reg = tmp_path / "r.sqlite"
    r = zkfp("registry", "add", bundle, "--registry", reg)
    assert r.returncode == 2 and "did not verify" in r.stderr and "dev SRS" in r.stderr  # not without opting in
    assert not reg.exists() or zkfp("registry", "list", "--json", "--registry", reg).stdout.strip() == "[]"
    r = zkfp("registry", "add", bundle, "--name", "embedded", "--allow-dev-srs", "--registry", reg)
    assert r.returncode == 0 and "proven" in r.stdout, r.stderr
    digest = json.loads((bundle / "manifest.json").read_text())["commitment_digest"]
    (entry,) = json.loads(zkfp("registry", "list", "--json", "--registry", reg).stdout)
    assert entry["proven"] and entry["commitment_digest"] == digest and entry["srs_kind"] == "dev"
    save(extract(llama), tmp_path / "stranger.json")
    assert zkfp("registry", "add", tmp_path / "stranger.json", "--registry", reg).returncode == 0
    out = json.loads(zkfp("identify", embedded.path(), "--registry", reg, "--json").stdout)
    best, other = out["matches"]
    assert best["name"] == "embedded" and best["proven"] and best["verdict"] == "same-lineage"
    assert best["basis"] == "v" and best["similarity"] >= 99
    assert other["name"] == "stranger" and not other["proven"]
    out = json.loads(zkfp("compare", bundle, embedded.path(), "--json").stdout)
    assert out["suspect_fingerprinted"] and out["verdict"] == "same-lineage"


def test_a_bundle_is_registered_with_its_release_only_if_it_verifies_against_it(bundle, release, other_release,
                                                                                tmp_path):
    reg = tmp_path / "r.sqlite"
    r = zkfp("registry", "add", bundle, "--allow-dev-srs", "--release", other_release, "--registry", reg)
    assert r.returncode == 2 and f"did not verify against the release {other_release}" in r.stderr, r.stderr
    assert "nothing added" in r.stderr
    r = zkfp("registry", "add", bundle, "--name", "embedded", "--allow-dev-srs", "--release", release,
             "--registry", reg)
    assert r.returncode == 0 and "with its release" in r.stdout, r.stderr
    (entry,) = json.loads(zkfp("registry", "list", "--json", "--registry", reg).stdout)
    assert entry["name"] == "embedded" and entry["proven"] and entry["release"] == str(Path(release).resolve())
    assert entry["bases"] == ["v", "invariants", "heads"]  # computed from the release


def test_a_bundle_registered_with_its_release_gets_the_releases_heads_and_is_scored_on_them(bundle, release,
                                                                                             tmp_path):
    """A bundle holds v only; registered with the release it verifies against, the entry also gets
    the invariants and heads computed from that release, so an FP.json suspect is scored on the
    heads, and the match says what the proof covers."""
    from fingerprint.extract import extract
    from fingerprint.registry import Registry

    reg = tmp_path / "r.sqlite"
    assert zkfp("registry", "add", bundle, "--name", "bare", "--allow-dev-srs", "--registry", reg).returncode == 0
    with Registry(reg) as db:
        assert not db.groups()[0].heads.carries.any() and db.get("bare").bases == ("v",)  # without its release
        db.remove("bare")
    assert zkfp("registry", "add", bundle, "--name", "embedded", "--allow-dev-srs", "--release", release,
                "--registry", reg).returncode == 0
    mine = extract(release)
    with Registry(reg, create=False) as db:
        (group,) = db.groups()
        assert np.allclose(group.heads[0], mine.layer_heads(), atol=1e-5)
        assert np.allclose(group.v[0], json.loads((bundle / "manifest.json").read_text())["v"], atol=1e-6)  # proven v kept
    save(mine, tmp_path / "suspect.json")
    (best,) = json.loads(zkfp("identify", tmp_path / "suspect.json", "--registry", reg, "--json").stdout)["matches"]
    assert (best["basis"], best["verdict"], best["proven"]) == ("heads", "same-lineage", True)
    assert best["similarity"] > 99 and "the proof covers v; its heads were computed from the release" in best["note"]


@pytest.mark.slow
def test_a_bundle_that_does_not_verify_is_refused_and_nothing_is_stored(bundle, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(bundle, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["v"][0] += 0.5
    (bad / "manifest.json").write_text(json.dumps(m))
    reg = tmp_path / "r.sqlite"
    save(synthetic(1), tmp_path / "a.json")
    assert zkfp("registry", "add", tmp_path / "a.json", "--registry", reg).returncode == 0
    before = reg.read_bytes()
    r = zkfp("registry", "add", bad, "--allow-dev-srs", "--registry", reg)
    assert r.returncode == 2 and "did not verify (invalid" in r.stderr and "nothing added" in r.stderr
    assert reg.read_bytes() == before
