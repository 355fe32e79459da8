"""Chunked circuits (circuits.plan): the plan, the cut inputs, and the partial terms' sum."""

from __future__ import annotations

import numpy as np
import pytest


def _by_weights(part, budget):
    """A stand-in for ezkl's row count (monotone in the block size, as rows are): weights read
    (sums and encoders fit)."""
    return part.kind != "terms" or part.shape.weight_elements() <= budget


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    import taylor
    from circuits.inputs import Release, release_inputs, shape_of
    from fingerprint import spec
    from zkfp.zoo import embedded

    rel = Release(taylor.protect(embedded.path(), tmp_path_factory.mktemp("rel") / "rel"))
    shape = shape_of(rel, spec.K_TOKENS, spec.M_DIM)
    inputs = release_inputs(rel, shape, spec.select_tokens(rel.vocab(), shape.k))
    return shape, {name: arr for (name, _), arr in zip(shape.input_specs(), inputs)}


def _partials(plan, tensors) -> dict:
    """Each terms chunk's partial terms, (its terms, k²), evaluated by its own ONNX graph."""
    from onnx.reference import ReferenceEvaluator

    from circuits.graph import build_onnx
    from circuits.plan import chunk_inputs

    out = {}
    for c in plan.terms_chunks:
        feeds = {n: a.astype(np.float32) for (n, _), a in zip(c.part.shape.input_specs(),
                                                                chunk_inputs(c, plan.shape, tensors))}
        out[c.name] = ReferenceEvaluator(build_onnx(c.part.shape)).run(None, feeds)[0].reshape(len(c.terms), -1)
    return out


def _chunk_terms(plan, tensors):
    """Every term summed over the terms chunks' partials."""
    total = np.zeros((plan.shape.n_terms(), plan.shape.k ** 2))
    partials = _partials(plan, tensors)
    for c in plan.terms_chunks:
        total[list(c.terms)] += partials[c.name]
    return total


@pytest.mark.parametrize("budget", [8_000, 3_000])
def test_partial_terms_of_the_chunks_sum_to_the_whole_models_terms(embedded, budget):
    """Blocks of whole KV-head groups (budget 8,000) or of head dimensions of one group (3,000),
    neuron blocks padded with zeros: the chunks' partial terms add up to the unchunked terms."""
    from circuits.graph import reference_terms
    from circuits.plan import make_plan

    shape, tensors = embedded
    plan = make_plan(shape, 17, budget, fits=_by_weights)
    assert len(plan.terms_chunks) > 4
    kinds = {c.part.key() for c in plan.terms_chunks}
    assert len(kinds) <= 3, "chunks of one kind share one circuit"
    whole = reference_terms(shape, [tensors[n] for n, _ in shape.input_specs()]).reshape(shape.n_terms(), -1)
    got = _chunk_terms(plan, tensors)
    assert np.allclose(got, whole, rtol=1e-4, atol=1e-6 * np.abs(whole).max())


def test_every_release_tensor_is_read_exactly_once_across_chunks(embedded):
    from circuits.plan import make_plan

    shape, tensors = embedded
    plan = make_plan(shape, 17, 3_000, fits=_by_weights)
    names = plan.release_tensors()
    assert len(names) == len(set(names))
    read = [n for c in plan.terms_chunks for n in c.inputs(shape)]
    shared = {n for n in read if read.count(n) > 1}
    assert shared == {"tokens"} | {f"l{i}.{g}_gain" for i in range(len(shape.layers)) for g in ("attn", "mlp")}


def test_a_model_that_fits_one_circuit_is_one_terms_chunk_and_the_encoder(embedded):
    from circuits.plan import make_plan

    shape, _ = embedded
    plan = make_plan(shape, 17, 10**9, fits=_by_weights)
    assert [c.name for c in plan.chunks] == ["terms", "encoder"]
    assert plan.chunks[0].inputs(shape) == [n for n, _ in shape.input_specs()]
    assert plan.chunks[1].inputs(shape) == ["terms", "root_inv_sigma"]


def test_more_chunks_than_the_fan_in_are_summed_in_a_tree(embedded, monkeypatch):
    from circuits import plan as plan_mod

    shape, _ = embedded
    monkeypatch.setattr(plan_mod, "FAN_IN", 3)
    plan = plan_mod.make_plan(shape, 17, 3_000, fits=_by_weights)
    sums = [c for c in plan.chunks if c.part.kind == "sum"]
    assert sums and all(len(c.sources) <= 3 for c in plan.chunks if c.sources)
    encoder = plan.chunks[-1]
    assert encoder.part.kind == "encoder" and encoder.terms == tuple(range(shape.n_terms()))
    produced = [c.name for c in plan.chunks[:-1]]
    consumed = [s for c in plan.chunks for s in c.sources]
    assert sorted(produced) == sorted(consumed), "every partial is read exactly once"



def test_an_encoder_too_large_for_a_chunk_is_split_by_layers_and_encodes_the_same(embedded):
    """Each layer's v depends on that layer's terms only: encoders of groups of layers, each
    reading just the partials that hold its terms, make the whole encoder's public values."""
    from onnx.reference import ReferenceEvaluator

    from circuits.finish import v_from_public
    from circuits.graph import build_encoder_onnx
    from circuits.plan import make_plan
    from fingerprint.spec import off_diagonal

    shape, tensors = embedded
    one_layer = lambda p, b: _by_weights(p, b) and (p.kind != "encoder" or p.encoded_layers <= 1)  # noqa: E731
    split, whole = make_plan(shape, 17, 8_000, fits=one_layer), make_plan(shape, 17, 8_000, fits=_by_weights)
    assert [c.name for c in whole.encoders] == ["encoder"]
    assert [c.name for c in split.encoders] == ["encoder.l0-1", "encoder.l1-2"] and split.chunks[-2:] == tuple(split.encoders)
    assert [c.part.output_terms for c in split.encoders] == [(0, 1, 2), (3, 4, 5)]
    for e in split.encoders:
        assert set(e.sources) == {c.name for c in split.terms_chunks if set(c.terms) & set(e.part.output_terms)}
        assert e.inputs(shape)[-1] == f"root_inv_sigma@{e.name}"  # its own roots: not linked to the other's

    partials = _partials(split, tensors)
    total = _chunk_terms(split, tensors)
    c = total[:, off_diagonal(shape.k)] / 2.0 ** shape.term_shift  # the encoder's units (as test_circuits feeds its graph)
    c = c - c.mean(axis=1, keepdims=True)
    u = (c * c).sum(axis=1) ** -0.25  # u² = 1/σ

    def public(encoder) -> tuple:
        feeds = {f"partial{i}": partials[s].reshape(-1).astype(np.float32) for i, s in enumerate(encoder.sources)}
        feeds["root_inv_sigma"] = u[list(encoder.part.output_terms)].astype(np.float32)
        values = ReferenceEvaluator(build_encoder_onnx(encoder.part)).run(None, feeds)[0]
        return v_from_public(values, shape, encoder.part.encoded_layers)

    v_whole, checks_whole = public(whole.encoders[0])
    pieces = [public(e) for e in split.encoders]
    assert np.allclose(np.concatenate([p[0] for p in pieces]), v_whole, atol=1e-5)
    assert np.allclose(np.concatenate([p[1] for p in pieces]), checks_whole, atol=1e-5)
    assert np.abs(checks_whole - 1).max() < 1e-3
