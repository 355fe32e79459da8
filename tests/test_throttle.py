"""`zkfp protect --slowdown X`: N and the expanded fraction are chosen from costs measured on the
checkpoint's own shape (taylor.throttle), within the fidelity bounds, and recorded in the manifest."""

from __future__ import annotations

import json

import pytest

from taylor import conversion, throttle
from taylor.release import MAX_TERMS
from zkfp.cli import main
from zkfp.errors import ZkfpError
from zkfp.zoo.tiny import build, save, tiny_config


class LinearCosts:
    """A stand-in for ShapeTimer with exact costs: per token 10 ms, of which each of the 4 blocks'
    MLP is 1 ms; a TaylorMLP costs (1 − f) ms for its exact neurons plus f·(N+3)/3 ms."""

    def __init__(self, config):
        self.arch = type("Arch", (), {"dims": type("Dims", (), {"layers": 4})()})()

    def token_s(self):
        return 10e-3

    def mlp_s(self):
        return 1e-3

    def taylor_s(self, n, f):
        return ((1 - f) + f * (n + 3) / 3) * 1e-3


def slowdown(n, f):  # what LinearCosts implies: 1 + 4·(t_taylor − t_mlp)/t_token
    return 1 + 4 * (LinearCosts(None).taylor_s(n, f) - 1e-3) / 10e-3


@pytest.fixture
def linear_costs(monkeypatch):
    monkeypatch.setattr(throttle, "ShapeTimer", LinearCosts)


def test_a_small_target_expands_fewer_neurons_at_the_fidelity_floor_of_n(linear_costs):
    assert slowdown(throttle.MIN_TERMS, 0.7) > 1.8
    t = throttle.choose({}, 1.8, fraction_ceiling=0.7)
    assert t.n_terms == throttle.MIN_TERMS
    assert t.fraction < 0.7 and t.slowdown >= 1.8
    assert slowdown(t.n_terms, t.fraction - 0.01) < 1.8  # the smallest fraction (in steps of 0.01) that reaches it


def test_a_large_target_raises_n_at_the_ceiling_fraction(linear_costs):
    t = throttle.choose({}, 3.0, fraction_ceiling=0.7)
    assert t.fraction == 0.7 and t.n_terms > throttle.MIN_TERMS and t.n_terms % 2 == 0
    assert t.slowdown >= 3.0 > slowdown(t.n_terms - 2, 0.7)
    assert t.to_json()["target"] == 3.0


def test_a_higher_fraction_ceiling_reaches_further(linear_costs):
    with pytest.raises(ZkfpError, match=f"N = {MAX_TERMS} terms .* fraction of 0.70 .* gives about"):
        throttle.choose({}, 4.5, fraction_ceiling=0.7)
    assert throttle.choose({}, 4.5, fraction_ceiling=1.0).slowdown >= 4.5


def test_a_target_out_of_reach_gets_the_nearest_when_not_strict(linear_costs):
    t = throttle.choose({}, 4.5, fraction_ceiling=0.7, strict=False)
    assert (t.n_terms, t.fraction) == (MAX_TERMS, 0.7)
    assert t.slowdown == pytest.approx(slowdown(MAX_TERMS, 0.7), abs=1e-3) and t.slowdown < t.target == 4.5


@pytest.mark.parametrize("hidden, expected", [(1024, conversion.DEFAULT_SLOWDOWN), (4096, conversion.DEFAULT_SLOWDOWN),
                                              (960, None), (64, None)])
def test_the_default_aims_for_4x_from_hidden_1024(hidden, expected):
    config = tiny_config("llama", hidden=hidden, intermediate=64).to_dict()
    assert conversion.default_slowdown(config) == expected


def test_default_protect_of_a_wide_model_records_the_throttle_it_aimed_for(linear_costs, tmp_path, capsys):
    # LinearCosts cannot reach 4x (N = 32 gives 3.99x): the default takes the nearest and says so
    src = save(build("llama", hidden=1024, layers=1, heads=8, kv_heads=8, intermediate=96, vocab=128), tmp_path / "src")
    rc, out, err = _run(capsys, "protect", src, "--out", tmp_path / "rel")
    assert rc == 0, err
    m = json.loads((tmp_path / "rel" / "manifest.json").read_text())
    assert m["throttle"]["target"] == conversion.DEFAULT_SLOWDOWN and m["n_terms"] == MAX_TERMS
    assert m["throttle"]["slowdown"] == pytest.approx(slowdown(MAX_TERMS, m["expanded_fraction"]), abs=1e-3)
    assert "short of it: N = 32 is the most the format allows" in out
    rc, _, err = _run(capsys, "protect", src, "--out", tmp_path / "fixed", "--terms", "12")
    assert rc == 0 and json.loads((tmp_path / "fixed" / "manifest.json").read_text())["throttle"] is None


@pytest.mark.parametrize("bad", [0.5, -2, float("nan"), float("inf")])
def test_targets_below_one_or_not_finite_are_refused(bad):
    with pytest.raises(ZkfpError, match="must be a number ≥ 1"):
        throttle.choose({}, bad, fraction_ceiling=0.7)


def test_measured_costs_on_a_real_shape_grow_with_n_and_fraction():
    timer = throttle.ShapeTimer(tiny_config("llama", hidden=256, layers=2, intermediate=1024).to_dict())
    assert timer.token_s() > timer.mlp_s() > 0
    assert timer.taylor_s(24, 0.7) > timer.taylor_s(2, 0.7)
    assert timer.taylor_s(24, 1.0) > timer.taylor_s(24, 0.1)


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_protect_slowdown_records_target_and_measured_figure(tiny_models, tmp_path, capsys):
    rel = tmp_path / "rel"
    rc, out, err = _run(capsys, "protect", tiny_models("llama"), "--out", rel, "--slowdown", 1.05)
    assert rc == 0, err
    m = json.loads((rel / "manifest.json").read_text())
    assert m["throttle"]["target"] == 1.05 and m["throttle"]["slowdown"] >= 1.05
    assert m["throttle"]["threads"] == 1 and m["throttle"]["token_ms"] > 0
    assert (m["n_terms"], m["expanded_fraction"]) == (m["throttle"]["n_terms"], m["throttle"]["fraction"])
    assert m["expanded_fraction"] <= 0.7
    assert "measured slowdown" in out
    rc, _, _ = _run(capsys, "protect", tiny_models("llama"), "--out", tmp_path / "plain")
    assert rc == 0 and json.loads((tmp_path / "plain" / "manifest.json").read_text())["throttle"] is None


@pytest.mark.parametrize("argv, match", [
    (["--slowdown", "0.5"], "--slowdown must be a number ≥ 1"),
    (["--slowdown", "2", "--terms", "12"], "pass --slowdown or --terms, not both"),
    (["--slowdown", "1000"], "unreachable within fidelity"),
])
def test_protect_refuses_bad_slowdowns_before_writing(tiny_models, tmp_path, capsys, argv, match):
    rel = tmp_path / "rel"
    rc, _, err = _run(capsys, "protect", tiny_models("llama"), "--out", rel, *argv)
    assert rc != 0 and match in err, err
    assert not rel.exists() and list(tmp_path.iterdir()) == []
