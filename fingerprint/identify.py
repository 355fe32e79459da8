"""Which registered fingerprint is a suspect derived from? Rank every registry entry.

The suspect is an FP.json or a proof bundle (compared as it is), or a model or Taylor release
folder, which is fingerprinted on each registered token list: entries are grouped by (spec,
token ids) and the suspect is fingerprinted once per group, so each entry is compared on the
rows it was published with (vocabulary extensions included). A group under another spec version
than this zkfp computes, or whose token ids the suspect's vocabulary lacks, is listed as not
comparable with the reason.

Within a group (one spec, token list and depth) the per-layer similarities are one matrix
product and the layer alignments one dynamic programme over the whole group
(`fingerprint.compare.aligned_scores`), on the invariants where both sides carry them, on v
otherwise, each with its calibrated verdict; where both sides carry per-head vectors, the best
HEADS_RESCORED entries of a group are then scored on them instead (`fingerprint.heads`: matchings
of heads per pair of layers, entry by entry, too slow to run on thousands). A proven entry carries
them when it was registered with its release (computed from it: `registry.add_file`). Entries are
ranked by `compare.null_z` — standard deviations above the zoo's unrelated pairs — which puts
every basis and both MLP kinds on one scale; within one basis and kind that is the order of the
similarity.

Registry entries are fingerprints. Where the published release of an entry is at hand — recorded
in the registry (`zkfp registry add … --release DIR`) or given (`releases`, `zkfp identify
--release NAME=DIR`) — and the suspect is a model, that entry is scored on the weights instead,
bases aligned (`fingerprint.weights`), which also separates plain-MLP models trained on the same
text (README, "Fingerprints").
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fingerprint import compare as C
from fingerprint import fpjson
from fingerprint import tokens as token_strings
from fingerprint.fpjson import Fingerprint
from fingerprint.registry import Group, Registry
from zkfp.errors import FingerprintError, RegistryError


@dataclass
class Match:
    name: str
    proven: bool
    srs_kind: str | None
    commitment_digest: str | None
    v: np.ndarray                       # the registered v (for the report's image)
    similarity: float | None = None     # None: not comparable (see `reason`)
    basis: str | None = None
    verdict: str | None = None
    z: float = float("-inf")
    suspect_key: int | None = None      # which of the suspect's fingerprints it was compared with
    reason: str | None = None
    note: str | None = None             # how it was scored where that is not plain (renumbered tokens, a release)
    false_positive_rate: float = 0.0    # implied at its basis' `related` (compare.implied_fpr); 0 if not compared

    def to_json(self) -> dict:
        return {"name": self.name, "similarity": None if self.similarity is None else round(self.similarity, 4),
                "basis": self.basis, "verdict": self.verdict, "proven": self.proven, "srs_kind": self.srs_kind,
                "commitment_digest": self.commitment_digest, "reason": self.reason, "note": self.note,
                "false_positive_rate": self.false_positive_rate}


@dataclass
class Identification:
    suspect: str
    fingerprinted: bool                                  # the suspect is a model/release folder
    suspect_fps: list[Fingerprint] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)   # best first; not comparable last

    def false_positive_bound(self) -> float:
        """The implied chance that some compared entry, were every one unrelated to the suspect, would
        still be called same-lineage: at most the sum of their rates (a union bound). Each comparison
        is a test, so a large registry spends more of the false-positive rate than one `compare`."""
        return min(1.0, sum(m.false_positive_rate for m in self.matches))

    def to_json(self) -> dict:
        return {"suspect": self.suspect, "fingerprinted": self.fingerprinted,
                "token_lists": len(self.suspect_fps), "false_positive_bound": self.false_positive_bound(),
                "matches": [m.to_json() for m in self.matches]}


def is_model_folder(path: str | os.PathLike) -> bool:
    """A folder that is not a proof bundle: a transformers checkpoint or a Taylor release."""
    return Path(path).is_dir() and not fpjson.is_bundle(path)


def suspect_fingerprint(path: str | os.PathLike, token_ids: list[int] | None = None,
                        tokens: list[str] | None = None) -> Fingerprint:
    """An FP.json or bundle as it is; a model or release folder fingerprinted on the published
    `token_ids`, or at its own ids of the published `tokens` where it numbers them otherwise."""
    if not is_model_folder(path):
        return fpjson.load(path)
    from fingerprint.extract import extract

    return extract(path, token_ids=None if token_ids is None else token_strings.ids_to_read(path, token_ids, tokens))


def identify(suspect: str | os.PathLike, registry: Registry,
             releases: dict[str, str | os.PathLike] | None = None) -> Identification:
    """Rank every entry against `suspect`. `releases` maps entry names to their published release
    (or model) folders at hand: those entries are scored on the weights instead (`_on_weights`)."""
    if releases and not is_model_folder(suspect):
        raise FingerprintError(f"comparing weights with registered releases needs a model or release folder as the "
                               f"suspect, not {suspect}")
    groups = registry.groups()
    if not groups:
        raise RegistryError(f"the registry {registry.path} is empty: add published fingerprints first "
                            "(zkfp registry add BUNDLE_OR_FP_JSON)")
    out = Identification(suspect=str(suspect), fingerprinted=is_model_folder(suspect))
    suspect_fps, reasons, failed = _suspect_per_group(suspect, groups, out.fingerprinted)
    if failed and all(fp is None for fp in suspect_fps):
        raise failed[0]  # the suspect could not be fingerprinted for any group: say why once
    for group, fp, reason in zip(groups, suspect_fps, reasons):
        if fp is None:
            out.matches += [_not_comparable(e, group, g, reason) for g, e in enumerate(group.entries)]
            continue
        key = next((i for i, seen in enumerate(out.suspect_fps) if seen is fp), len(out.suspect_fps))
        if key == len(out.suspect_fps):  # groups of other depths share the fingerprint of their token list
            out.suspect_fps.append(fp)
        out.matches += _rank_group(group, fp, key)
    for name, release in (releases or {}).items():
        _on_weights(out, registry.get(name), release, suspect)
    if out.fingerprinted:
        for entry in (e for group in groups for e in group.entries):
            if entry.release and entry.name not in (releases or {}):
                _on_recorded_release(out, entry, suspect)
    out.matches.sort(key=lambda m: (m.similarity is None, -m.z, m.name))
    return out


def _suspect_per_group(suspect, groups: list[Group], fingerprinted: bool):
    """The suspect's fingerprint for each group (None where it cannot be compared), the reason for
    each None, and the errors fingerprinting the suspect raised."""
    from fingerprint import spec

    fps, reasons, failed = [], [], []
    fixed = None if fingerprinted else suspect_fingerprint(suspect)
    by_tokens: dict[tuple, Fingerprint | FingerprintError] = {}  # groups of other depths share token lists
    for group in groups:
        ours = fixed.spec if fixed is not None else spec.spec_dict(layers=group.spec["layers"], k=len(group.token_ids))
        reason = C.spec_mismatch(group.spec, ours)
        if reason is None and fixed is not None and list(fixed.token_ids) != list(group.token_ids) \
                and (group.tokens is None or list(group.tokens) != fixed.tokens):
            reason = "registered on other token ids; pass the suspect's model folder to fingerprint it on them"
        fp = None
        if reason is None:
            key = tuple(group.token_ids if fixed is not None else token_strings.ids_to_read(
                suspect, group.token_ids, None if group.tokens is None else list(group.tokens)))
            if key not in by_tokens:
                try:
                    by_tokens[key] = fixed if fixed is not None else suspect_fingerprint(suspect, list(key))
                except FingerprintError as exc:
                    by_tokens[key] = exc
                    failed.append(exc)
            if isinstance(by_tokens[key], FingerprintError):
                reason = str(by_tokens[key])
            else:
                fp = by_tokens[key]
        fps.append(fp)
        reasons.append(reason)
    return fps, reasons, failed


RENUMBERED = "the suspect numbers these tokens otherwise: read at its own ids for them"
# a proven entry carries invariants and heads only when registered with its release (registry.add_file)
RELEASE_BASES = "the proof covers v; its {basis} were computed from the release it verified against"


def _rank_group(group: Group, fp: Fingerprint, key: int) -> list[Match]:
    n, depth = len(group.entries), group.spec["layers"]

    def scores(published: np.ndarray, suspect: np.ndarray) -> np.ndarray:
        S = C.layer_similarities(published.reshape(len(published), depth, -1), suspect)
        return C.aligned_scores(S)

    sim = scores(group.v, fp.layer_v())
    basis = np.array(["v"] * n, dtype=object)
    if fp.invariants is not None and group.invariants is not None:
        rows = group.has_invariants
        sim[rows] = scores(group.invariants, fp.layer_invariants())
        basis[rows] = "invariants"
    tied = np.array([C.tied(e.model, fp.model) for e in group.entries], dtype=bool)
    if fp.heads is not None and C.can_match_heads():
        _rescore_on_heads(group, fp, sim, basis, tied)
    note = RENUMBERED if list(fp.token_ids) != list(group.token_ids) else None
    out = []
    for b, t_ in itertools.product(("heads", "invariants", "v"), (False, True)):
        idx = np.flatnonzero((basis == b) & (tied == t_))
        if not len(idx):
            continue
        t = C.thresholds(group.spec, b, t_)
        verdicts, z = C.verdicts(sim[idx], t), C.null_z(sim[idx], t)
        fpr = C.implied_fpr(t["related"], t["null_mean"], t["null_sd"])
        for j, i in enumerate(idx):
            e = group.entries[i]
            notes = [note] + ([RELEASE_BASES.format(basis=b)] if e.proven and e.release and b != "v" else [])
            out.append(Match(name=e.name, proven=e.proven, srs_kind=e.srs_kind,
                             commitment_digest=e.commitment_digest, v=group.v[i], similarity=float(sim[i]),
                             basis=b, verdict=verdicts[j], z=float(z[j]), suspect_key=key,
                             note="; ".join(n for n in notes if n) or None, false_positive_rate=fpr))
    return out


HEADS_RESCORED = 16  # entries per group scored on their heads: the best by the invariants or v


def _rescore_on_heads(group: Group, fp: Fingerprint, sim: np.ndarray, basis: np.ndarray, tied: np.ndarray) -> None:
    """Score on the heads, in place, the HEADS_RESCORED entries that carry them and rank highest on
    the invariants or v (standard deviations above their null). Heads are matched one to one per
    pair of layers, entry by entry (two 32-layer, 32-head models: about 20 ms, heads.aligned_score),
    so a registry of thousands is ranked on the matrix products first; the heads then decide among
    its best, read from the registry one entry at a time."""
    from fingerprint.heads import aligned_score, centred

    carry = np.flatnonzero(group.heads.carries)
    z = {i: float(C.null_z(sim[i], C.thresholds(group.spec, basis[i], bool(tied[i])))) for i in carry}
    mine = centred(fp.layer_heads())
    for i in sorted(carry, key=lambda i: -z[i])[:HEADS_RESCORED]:
        published = group.heads[i]
        if published is not None:  # None: removed from the registry since it was ranked
            sim[i], basis[i] = aligned_score(centred(published), mine), "heads"


RELEASE_MATCH = 99.0  # a release's float v against its registered v (the demo's proven v: 99.999)


def release_fingerprint(release: str | os.PathLike, token_ids, v: np.ndarray) -> Fingerprint | None:
    """The fingerprint of `release` on `token_ids` if it is the model a registered `v` was computed
    from (its v, computed here, must match: a float check; `zkfp verify --release` checks a proven
    bundle's commitment), else None."""
    from fingerprint.extract import extract

    mine = extract(release, token_ids=list(token_ids))
    same = len(mine.v) == len(v) and float(C.similarities(v, mine.v)[0]) >= RELEASE_MATCH
    return mine if same else None


def _on_weights(out: Identification, entry, release: str | os.PathLike, suspect: str | os.PathLike) -> None:
    """Re-score `entry` on the weights of `release` against the suspect's (fingerprint.weights),
    once the release is checked to be what the entry registered (`release_fingerprint`)."""
    from fingerprint.weights import compare_weights

    match = next(m for m in out.matches if m.name == entry.name)
    if release_fingerprint(release, entry.token_ids, match.v) is None:
        raise FingerprintError(f"{release} is not the release registered as {entry.name!r}: its fingerprint on the "
                               "entry's token ids differs from the registered one")
    result = compare_weights(release, suspect)
    t = C.thresholds({"mlp": result["mlp"]}, "weights", result["tied"])
    match.similarity, match.basis, match.verdict = result["similarity"], "weights", result["verdict"]
    match.z, match.reason = float(C.null_z(result["similarity"], t)), None
    match.false_positive_rate = result["false_positive_rate"]
    if result["verdict"] != result["forms_verdict"]:
        gauge = f"same-lineage by the gauge of W_q, W_k ({result['gauge']:.1f} ≥ {result['gauge_related']})"
        match.note = gauge if match.note is None else f"{match.note}; {gauge}"


def _on_recorded_release(out: Identification, entry, suspect) -> None:
    """The release the registry recorded for `entry`: scored on its weights, or, where it is gone
    or no longer the registered model, on the fingerprint with a note that says so."""
    match = next(m for m in out.matches if m.name == entry.name)
    if match.similarity is None:
        return
    if not Path(entry.release).is_dir():
        match.note = f"its recorded release {entry.release} is gone: scored on the fingerprint"
        return
    try:
        _on_weights(out, entry, entry.release, suspect)
    except FingerprintError as exc:
        match.note = f"scored on the fingerprint: {exc}"


def _not_comparable(e, group: Group, row: int, reason: str) -> Match:
    return Match(name=e.name, proven=e.proven, srs_kind=e.srs_kind, commitment_digest=e.commitment_digest,
                 v=group.v[row], reason=reason)
