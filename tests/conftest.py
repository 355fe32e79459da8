"""Shared fixtures: tiny trained checkpoints, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cache_outside_home(tmp_path_factory):
    """Keys, circuits and dev SRS files go to a temporary folder, never the user's home (child
    processes inherit it)."""
    saved = os.environ.get("ZKFP_CACHE")
    os.environ["ZKFP_CACHE"] = str(tmp_path_factory.mktemp("zkfp-cache"))
    # A proving key at 2^17 takes 0.7-2.8 GB and CI's disk is shared: keep a few beyond the proof's
    # own. Files run in name order, so every proof of the embedded shape (test_prove_verify) comes
    # before the other shapes' (its last two tests, then test_prove_verify_chunked) and sets it up once.
    os.environ["ZKFP_KEYS_MAX_GB"] = "6"
    os.environ["ZKFP_REGISTRY"] = str(tmp_path_factory.mktemp("zkfp-registry") / "registry.sqlite")
    # Ray (the prover's scheduler) keeps its session files under RAY_TMPDIR and, with token
    # authentication on, writes ~/.ray/auth_token: tests run a local instance without it.
    os.environ["RAY_TMPDIR"] = str(tmp_path_factory.mktemp("ray"))
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield
    if saved is None:
        os.environ.pop("ZKFP_CACHE", None)
    else:
        os.environ["ZKFP_CACHE"] = saved


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A factory of trained tiny checkpoints, cached per (family, seed, domain, steps, extra config)."""
    from zkfp.zoo.tiny import make_trained

    cache: dict = {}
    root = tmp_path_factory.mktemp("tiny-models")

    def make(family: str = "llama", seed: int = 0, domain="forest", steps: int = 150, **kw):
        key = (family, seed, str(domain), steps, tuple(sorted(kw.items())))
        if key not in cache:
            name = "-".join(str(p) for p in (family, seed, len(cache)))
            cache[key] = make_trained(family, root / name, seed=seed, domain=domain, steps=steps, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def llama(tiny_models):
    """A trained 3-layer tiny Llama (seed 0)."""
    return tiny_models("llama", seed=0, steps=150, layers=3)


@pytest.fixture(scope="session")
def gpt2(tiny_models):
    """A trained 3-layer tiny GPT-2 (seed 0)."""
    return tiny_models("gpt2", seed=0, steps=150, layers=3)


@pytest.fixture(scope="session")
def derived():
    """derived(model_dir, change, out_dir): load a checkpoint, apply `change` to the model, save it (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    from zkfp.zoo.tiny import save

    def make(src, change, out_dir):
        model = AutoModelForCausalLM.from_pretrained(src).float().eval()
        return save(change(model).float(), out_dir, dtype=torch.float32)

    return make


@pytest.fixture(scope="session")
def disguised(derived):
    """disguised(model_dir, transforms, out_root): a function-preserving disguise of a checkpoint, saved."""
    from fingerprint import disguise

    def make(src, transforms, out_root, seed=5):
        def change(model):
            d = disguise.apply(model, transforms, seed=seed)
            disguise.logits_close(model, d, atol=1e-4)  # the disguise is function-preserving
            return d

        return derived(src, change, out_root / "-".join(transforms))

    return make


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`zkfp demo`'s output folder. The demo protects the embedded tiny model with the defaults and
    proves the release with a dev SRS: its release and bundle are the proof tests' (one proof,
    not two: each costs minutes)."""
    from zkfp.demo import run

    out = tmp_path_factory.mktemp("demo") / "demo"
    assert run(str(out)) == 0, "zkfp demo failed"
    return out


@pytest.fixture(scope="session")
def release(demo):
    """The embedded tiny model, Taylor-protected with the defaults (the proof tests' model)."""
    return demo / "release"


@pytest.fixture(scope="session")
def bundle(demo):
    """The proof bundle of `release` (dev SRS), made once per session."""
    return demo / "bundle"


@pytest.fixture(scope="session")
def other_release(tmp_path_factory, tiny_models):
    """Another model of the embedded model's shape (so the session's keys prove it), shipped in
    bf16 as most real checkpoints are, Taylor-protected."""
    import torch

    import taylor
    from zkfp.zoo import embedded

    spec = dict(embedded.SPEC)
    src = tiny_models(spec.pop("family"), seed=3, steps=20, dtype=torch.bfloat16, **spec)
    return Path(taylor.protect(src, tmp_path_factory.mktemp("rel2") / "release"))
