"""How the fingerprint's computation is cut into circuits that ezkl proves one at a time.

Every term is a sum over independent slices of the weights (HuRef's invariants, Zeng et al. 2024):
M_a = Σ_g Σ_d Q[:, g, ·, d] K[:, g, d]ᵀ over KV-head groups g and head dimensions d, M_b likewise
with V and O, and M_f = Σ_n over neurons n. So a model too large for one circuit is proved as

  terms chunks   each reads the k token rows and one slice of one layer — a block of (group, head
                 dimension) pairs for M_a and M_b, or a block of expanded or exact neurons for M_f —
                 and commits its partial terms;
  sum chunks     each reads up to FAN_IN committed partials and commits their sums (only models
                 with more than FAN_IN terms chunks have them);
  the encoder    reads the last committed partials, sums them and encodes (circuits.graph).

Chunks are linked by KZG commitments alone (ezkl 23 has no aggregation circuit): the token rows
and each layer's norm gains are one tensor under one commitment in every chunk that reads them,
and a chunk's committed output is the next chunk's committed input. A commitment depends on
logrows, so every chunk of a model uses one logrows. Blocks are padded with zero rows to the
chunk's shape, so chunks of one kind share one compiled circuit and one key pair.

The plan is a pure function of the model's shape, logrows and the row budget per chunk:
prover, verifier and `zkfp commit` derive the same chunks. A model that fits one circuit gets
one terms chunk, named "terms", and the encoder: the two-circuit statement of smaller models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from circuits.spec import CircuitShape, LayerShape

FAN_IN = 32            # partials one sum chunk (or the encoder) reads
TERM_INDEX = {"qk": 0, "vo": 1, "mlp": 2}  # a term's place within its layer (fingerprint.spec.TERMS)
SHARED = ("tokens", "attn_gain", "mlp_gain")  # read whole by every chunk that reads them (linked)


@dataclass(frozen=True)
class Part:
    """One circuit to compile: a terms chunk's, a sum's or an encoder's."""
    kind: str                                # "terms" | "sum" | "encoder"
    shape: CircuitShape                      # terms: the chunk's padded shape; sum/encoder: the model's
    layout: tuple[tuple[int, ...], ...] = ()  # sum/encoder: which output term each input's terms add to
    layers: tuple[int, int] | None = None    # encoder: the layers [a, b) it encodes (None: all)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:24]

    def to_json(self) -> dict:
        d = {"kind": self.kind, "shape": self.shape.to_json(), "layout": [list(t) for t in self.layout]}
        if self.layers is not None:  # an encoder of every layer keeps the key it always had
            d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Part":
        layers = tuple(d["layers"]) if d.get("layers") is not None else None
        return cls(d["kind"], CircuitShape.from_json(d["shape"]), tuple(tuple(t) for t in d["layout"]), layers)

    @property
    def output_terms(self) -> tuple[int, ...]:
        """Its output's terms, numbered within the output (for an encoder: the model's terms it encodes)."""
        if self.kind == "terms":
            return tuple(range(self.shape.n_terms()))
        if self.layers is not None:
            return tuple(range(3 * self.layers[0], 3 * self.layers[1]))
        return tuple(sorted({t for lay in self.layout for t in lay}))

    @property
    def encoded_layers(self) -> int:
        """How many layers' v an encoder makes public."""
        return len(self.output_terms) // 3

    def committed_io(self) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
        """(name, dims) of the committed inputs and outputs, in circuit order (names generic)."""
        kk = self.shape.k * self.shape.k
        if self.kind == "terms":
            return {"inputs": self.shape.input_specs(), "outputs": [("partial", (self.shape.n_terms() * kk,))]}
        partials = [(f"partial{i}", (len(lay) * kk,)) for i, lay in enumerate(self.layout)]
        if self.kind == "sum":
            return {"inputs": partials, "outputs": [("partial", (len(self.output_terms) * kk,))]}
        return {"inputs": partials + [("root_inv_sigma", (len(self.output_terms),))], "outputs": []}


@dataclass(frozen=True)
class Slice:
    """What a terms chunk reads of one layer (index among the last L layers); empty ranges read nothing."""
    layer: int
    groups: tuple[int, int] = (0, 0)
    dims: tuple[int, int] = (0, 0)
    expanded: tuple[int, int] = (0, 0)
    exact: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Chunk:
    name: str
    part: Part
    slices: tuple[Slice, ...] = ()   # terms chunks
    sources: tuple[str, ...] = ()    # sum chunks and the encoder: the chunks whose partials they read
    terms: tuple[int, ...] = ()      # the model's term indices its output partial holds, in order

    def inputs(self, shape: CircuitShape) -> list[str]:
        """The names of the tensors it reads, in circuit order: equal names are one tensor."""
        if self.part.kind != "terms":
            if self.part.kind != "encoder":
                return list(self.sources)
            # each encoder's u_t are its own tensor: split encoders read different terms' roots
            return list(self.sources) + ["root_inv_sigma" + ("" if self.part.layers is None else f"@{self.name}")]
        out = []
        for name, _ in self.part.shape.input_specs():
            if name == "tokens":
                out.append(name)
                continue
            piece, role = name.split(".", 1)
            s = self.slices[int(piece[1:])]
            out.append(f"l{s.layer}.{role}{_suffix(s, role, shape)}")
        return out

    def outputs(self) -> list[str]:
        return [] if self.part.kind == "encoder" else [self.name]


@dataclass(frozen=True)
class Plan:
    shape: CircuitShape
    logrows: int
    chunk_rows: int
    chunks: tuple[Chunk, ...]   # in proving order; the encoders last, in layer order

    @property
    def terms_chunks(self) -> list[Chunk]:
        return [c for c in self.chunks if c.part.kind == "terms"]

    @property
    def encoders(self) -> list[Chunk]:
        """The chunks whose public values are v: one, or one per group of layers (in order)."""
        return [c for c in self.chunks if c.part.kind == "encoder"]

    @cached_property
    def parts(self) -> dict[str, Part]:
        """The distinct circuits, by key: setup is paid once per entry."""
        return {c.part.key(): c.part for c in self.chunks}

    def release_tensors(self) -> list[str]:
        """Names of the release tensors the chunks read, each once, in plan order."""
        seen: dict[str, None] = {}
        for c in self.terms_chunks:
            seen.update(dict.fromkeys(c.inputs(self.shape)))
        return list(seen)

    def to_json(self) -> dict:
        return {"logrows": self.logrows, "chunk_rows": self.chunk_rows,
                "chunks": [{"name": c.name, "kind": c.part.kind, "key": c.part.key()} for c in self.chunks]}


def _suffix(s: Slice, role: str, shape: CircuitShape) -> str:
    """Which slice of a release tensor a chunk reads; the whole tensor has no suffix."""
    if role in SHARED:
        return ""
    layer = shape.layers[s.layer]
    if role in ("q", "k", "v", "o"):
        whole = s.groups == (0, shape.kv_heads) and s.dims == (0, shape.head_dim)
        return "" if whole else f"@g{s.groups[0]}-{s.groups[1]}.d{s.dims[0]}-{s.dims[1]}"
    lo, hi = s.expanded if role.endswith("_s") else s.exact
    return "" if (lo, hi) == (0, layer.expanded if role.endswith("_s") else layer.exact) else f"@{lo}-{hi}"


# -- the plan ------------------------------------------------------------------------------------

def make_plan(shape: CircuitShape, logrows: int, chunk_rows: int | None = None, fits=None) -> Plan:
    """The chunks of `shape` at `logrows`, each terms chunk and encoder within `chunk_rows` circuit
    rows (default: all of 2^logrows but ezkl's reserve). `fits(part, rows)` says whether a circuit
    holds within that many rows (default: ezkl's own count, `circuits.pipeline.fits`)."""
    from circuits import pipeline

    fits = fits or pipeline.fits
    budget = chunk_rows or (1 << logrows) - pipeline.ROW_RESERVE
    whole = Chunk("terms", Part("terms", shape), slices=tuple(
        Slice(i, (0, shape.kv_heads), (0, shape.head_dim), (0, l.expanded), (0, l.exact))
        for i, l in enumerate(shape.layers)), terms=tuple(range(shape.n_terms())))
    chunks = [whole] if fits(whole.part, budget) else _split(shape, budget, fits)
    level, depth = chunks, 0
    while len(level) > FAN_IN:
        level = _sum_level(shape, level, depth)
        chunks += level
        depth += 1
    encoders = _encoders(shape, level, budget, fits)
    if tuple(t for e in encoders for t in e.part.output_terms) != tuple(range(shape.n_terms())):
        raise AssertionError("the plan does not encode every term")
    return Plan(shape, logrows, budget, tuple(chunks) + tuple(encoders))


def _encoders(shape: CircuitShape, level: list[Chunk], budget: int, fits) -> list[Chunk]:
    """The encoder, or, when it does not fit (each layer's projection costs ~50,000 rows, so a
    deep model's does not), encoders of equal groups of layers, each reading the partials that
    hold its layers' terms: every v_l depends on its own layer's terms only."""
    whole = _sum_chunk(shape, "encoder", level, kind="encoder")
    L = len(shape.layers)
    if L == 1 or fits(whole.part, budget):
        return [whole]
    group = lambda a, b: _encoder_of(shape, level, a, b)  # noqa: E731
    per = _largest(lambda n: group(0, n).part, L - 1, budget, fits)
    if per < 1:
        raise ValueError(f"the encoder of one layer needs more than {budget:,} rows")
    per = _balanced(L, per)
    return [group(a, min(L, a + per)) for a in range(0, L, per)]


def _encoder_of(shape: CircuitShape, level: list[Chunk], a: int, b: int) -> Chunk:
    """The encoder of layers [a, b): it reads the partials holding any of their terms."""
    wanted = set(range(3 * a, 3 * b))
    sources = [c for c in level if wanted & set(c.terms)]
    part = Part("encoder", shape, tuple(tuple(c.terms) for c in sources), layers=(a, b))
    return Chunk(f"encoder.l{a}-{b}", part, sources=tuple(c.name for c in sources), terms=tuple(sorted(wanted)))


def _sum_level(shape: CircuitShape, level: list[Chunk], depth: int) -> list[Chunk]:
    """Sums of partials holding the same terms, in balanced groups of at most FAN_IN: sums of
    one size and arity share one circuit, whichever layer's terms they hold."""
    by_terms: dict[tuple[int, ...], list[Chunk]] = {}
    for c in level:
        by_terms.setdefault(c.terms, []).append(c)
    groups = [g for g in by_terms.values() if len(g) > 1]
    alone = [g[0] for g in by_terms.values() if len(g) == 1]
    if alone:  # partials whose terms no other partial holds are summed together
        groups.append(alone)
    out = []
    for group in groups:
        n = -(-len(group) // FAN_IN)
        sizes = [len(group) // n + (i < len(group) % n) for i in range(n)]
        starts = [sum(sizes[:i]) for i in range(n)]
        out += [_sum_chunk(shape, f"sum{depth}.{len(out) + j}", group[a:a + k]) for j, (a, k) in enumerate(zip(starts, sizes))]
    return out


def _sum_chunk(shape: CircuitShape, name: str, sources: list[Chunk], kind: str = "sum") -> Chunk:
    """A chunk adding its sources' partials term by term; its part numbers terms within its own
    output (the encoder's output holds all the model's terms)."""
    terms = tuple(sorted({t for s in sources for t in s.terms}))
    local = {t: i for i, t in enumerate(terms)} if kind == "sum" else {t: t for t in terms}
    part = Part(kind, shape, tuple(tuple(local[t] for t in s.terms) for s in sources))
    return Chunk(name, part, sources=tuple(s.name for s in sources), terms=terms)


def _split(shape: CircuitShape, budget: int, fits) -> list[Chunk]:
    """Terms chunks of one kind each: attention blocks, then expanded, then exact neuron blocks,
    per layer. Block sizes are the largest whose circuit fits the budget (same sizes for every
    layer, so each kind compiles once)."""
    chunks: list[Chunk] = []
    G, D = shape.kv_heads, shape.head_dim
    per_group = _largest(lambda n: _attn_part(shape, n, D), G, budget, fits)
    if per_group >= 1:
        gs, ds = _balanced(G, per_group), D
    else:  # one group is too large: blocks of head dimensions of one group
        gs, ds = 1, _largest(lambda n: _attn_part(shape, 1, n), D, budget, fits)
        if ds < 1:
            raise ValueError(f"one head dimension of one KV-head group needs more than {budget:,} rows")
        ds = _balanced(D, ds)
    for i in range(len(shape.layers)):
        for g0 in range(0, G, gs):
            for d0 in range(0, D, ds):
                s = Slice(i, groups=(g0, min(G, g0 + gs)), dims=(d0, min(D, d0 + ds)))
                chunks.append(Chunk(f"l{i}.attn.g{g0}.d{d0}", _attn_part(shape, gs, ds), (s,),
                                    terms=(3 * i, 3 * i + 1)))
    for kind in ("expanded", "exact"):
        most = max(getattr(l, kind) for l in shape.layers)
        if most == 0:
            continue
        size = _largest(lambda n: _mlp_part(shape, kind, n), most, budget, fits)
        if size < 1:
            raise ValueError(f"one {kind} neuron needs more than {budget:,} rows")
        size = _balanced(most, size)
        for i, l in enumerate(shape.layers):
            for n0 in range(0, getattr(l, kind), size):
                s = Slice(i, **{kind: (n0, min(getattr(l, kind), n0 + size))})
                chunks.append(Chunk(f"l{i}.{kind}.{n0}", _mlp_part(shape, kind, size), (s,), terms=(3 * i + 2,)))
    return chunks


def _balanced(total: int, most: int) -> int:
    """The block size that cuts `total` into as few blocks as blocks of `most` do, evenly (less
    zero padding in the last block)."""
    blocks = -(-total // most)
    return -(-total // blocks)


def _attn_part(shape: CircuitShape, groups: int, dims: int) -> Part:
    return Part("terms", replace(shape, layers=(LayerShape(0, 0, groups, dims),)))


def _mlp_part(shape: CircuitShape, kind: str, n: int) -> Part:
    layer = LayerShape(n, 0, 0, 0) if kind == "expanded" else LayerShape(0, n, 0, 0)
    return Part("terms", replace(shape, layers=(layer,)))


def _largest(part_of, most: int, budget: int, fits) -> int:
    """The largest n in 1..most whose part fits the budget (0 if none): bisection (rows grow with
    n), its first probe where the shape's row estimate puts the answer."""
    if fits(part_of(most), budget):
        return most
    lo, hi = 0, most  # part_of(lo) fits (or lo = 0), part_of(hi) does not
    probe = int(most * budget / max(1, part_of(most).shape.estimate_rows()))
    while hi - lo > 1:
        mid = probe if lo < probe < hi else (lo + hi) // 2
        probe = 0
        if fits(part_of(mid), budget):
            lo = mid
        else:
            hi = mid
    return lo


# -- the chunks' inputs ------------------------------------------------------------------------

def chunk_inputs(chunk: Chunk, shape: CircuitShape, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A terms chunk's inputs, in circuit order, cut from the model's whole circuit inputs
    (`tensors`: name → array, as `shape.input_specs()` names them) and zero-padded to its shape."""
    r = shape.heads // shape.kv_heads
    out = []
    for (name, dims), real in zip(chunk.part.shape.input_specs(), chunk.inputs(shape)):
        if name == "tokens":
            out.append(tensors["tokens"])
            continue
        piece, role = name.split(".", 1)
        s = chunk.slices[int(piece[1:])]
        whole = tensors[f"l{s.layer}.{role}"]
        pad = chunk.part.shape.layers[int(piece[1:])]
        if role in SHARED:
            arr = whole
        elif role in ("q", "o"):  # rows (q) / columns (o) ordered by (group, head in group, dim)
            idx = _index([(g * r + j) * shape.head_dim + d for g in range(*s.groups) for j in range(r)
                          for d in range(*s.dims)], (pad.groups, r, pad.dims), (s.groups[1] - s.groups[0], r,
                                                                              s.dims[1] - s.dims[0]))
            arr = _take(whole, idx, axis=0 if role == "q" else 1)
        elif role in ("k", "v"):
            idx = _index([g * shape.head_dim + d for g in range(*s.groups) for d in range(*s.dims)],
                         (pad.groups, pad.dims), (s.groups[1] - s.groups[0], s.dims[1] - s.dims[0]))
            arr = _take(whole, idx, axis=0)
        else:
            lo, hi = s.expanded if role.endswith("_s") else s.exact
            n = pad.expanded if role.endswith("_s") else pad.exact
            axis = {"gate_s": 0, "up_s": 0, "coeffs_s": 2, "lsq_s": 1, "gate_f": 0, "up_f": 0, "down_f": 1}[role]
            arr = _take(whole, list(range(lo, hi)) + [-1] * (n - (hi - lo)), axis)
        if tuple(arr.shape) != tuple(dims):
            raise AssertionError(f"{real}: cut to {arr.shape}, the chunk expects {dims}")
        out.append(arr)
    return out


def _index(real: list[int], padded: tuple[int, ...], used: tuple[int, ...]) -> list[int]:
    """Lay `real` (indices in row-major order over `used`) into `padded`, -1 where padding."""
    grid = np.full(padded, -1, dtype=np.int64)
    grid[tuple(slice(0, u) for u in used)] = np.asarray(real, dtype=np.int64).reshape(used)
    return grid.reshape(-1).tolist()


def _take(a: np.ndarray, idx: list[int], axis: int) -> np.ndarray:
    """a's entries at `idx` along `axis`, zeros where idx is -1."""
    zero = np.zeros_like(np.take(a, [0], axis=axis))
    return np.ascontiguousarray(np.take(np.concatenate([a, zero], axis=axis),
                                        [i if i >= 0 else a.shape[axis] for i in idx], axis=axis))
