"""Layer truncation (``--layers N``): proportions, exact counts of the truncated model, and extrapolation."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction

import pytest

from godprof.analytic import Workload, count_params, estimate
from godprof.analytic.truncate import (
    TruncationError,
    extrapolate,
    extrapolate_by_kind,
    kept_per_kind,
    layer_kinds,
    no_layers,
    truncate,
)
from godprof.spec import load_spec

TINY = ["tiny-dense", "tiny-moe", "tiny-hybrid", "tiny-ssm", "tiny-ssm2", "tiny-mla"]


def tiny(name: str):
    return load_spec(f"examples/{name}.yaml")


def test_kinds_kept_in_proportion_and_order():
    jamba = load_spec("jamba-v0.1")  # 32 layers: attention every 8th, MoE every other
    full = layer_kinds(jamba)
    t = truncate(jamba, 8)
    assert t.truncated.model.num_layers == 8 == len(t.kept_layers)
    assert Counter(zip(t.truncated.layer_mixers, t.truncated.layer_ffns, strict=True)) == Counter(t.kept_counts)
    for key, c in full.items():  # each kind keeps a quarter of its layers
        assert t.kept_counts[key] == c // 4
    assert list(t.kept_layers) == sorted(t.kept_layers)
    ds = load_spec("deepseek-v3")  # 3 dense layers, 58 MoE layers: both kinds survive
    kept = kept_per_kind(layer_kinds(ds), 4)
    assert sorted(kept.values()) == [1, 3]


def test_apportionment_sums_and_keeps_every_kind():
    counts = Counter({("a", "x"): 1, ("b", "x"): 30, ("c", "y"): 7})
    for n in range(3, 39):
        kept = kept_per_kind(counts, n)
        assert sum(kept.values()) == n
        assert all(1 <= kept[k] <= counts[k] for k in counts)


def test_bad_layer_counts_are_clear_errors():
    with pytest.raises(TruncationError, match="at least 3"):
        truncate(tiny("tiny-hybrid"), 2)
    with pytest.raises(TruncationError, match="exceeds"):
        truncate(tiny("tiny-dense"), 5)


@pytest.mark.parametrize("name", TINY)
def test_truncated_counts_are_exact(name):
    torch = pytest.importorskip("torch")
    from godprof.build import build_model

    spec = tiny(name)
    n = max(len(layer_kinds(spec)), spec.model.num_layers // 2)
    t = truncate(spec, n)
    for s in (t.truncated, no_layers(spec)):
        model = build_model(s, device="meta", dtype=torch.float32)
        assert sum(p.numel() for p in model.parameters()) == count_params(s).total
        est = estimate(s, Workload(batch=2, seq=16, context=24, dtype="fp32"))
        assert model.allocate_cache(2, 24).nbytes() == est.memory["kv_cache_bytes"] + est.memory["ssm_state_bytes"]


def test_big_spec_truncation_is_exact_on_meta():
    torch = pytest.importorskip("torch")
    from godprof.build import build_model

    t = truncate(load_spec("deepseek-v3"), 4)
    model = build_model(t.truncated, device="meta", dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == count_params(t.truncated).total


def test_extrapolation_arithmetic():
    # one layer kind: exactly base + (measured - base) x L / N, whatever the cost model's scale
    assert extrapolate(10.0, 2.0, cost_full=5 + 32 * 3, cost_trunc=5 + 8 * 3, cost_base=5) == pytest.approx(34.0)
    # layers lost in the noise (truncated no slower than the base): the whole time scales with the cost
    assert extrapolate(2.0, 2.5, cost_full=101, cost_trunc=29, cost_base=5) == pytest.approx(2.0 * 101 / 29)
    spec = tiny("tiny-hybrid")
    t = truncate(spec, 4)
    # per-kind FLOPs: one value per kept layer of each component, scaled to the full count of that component
    comps = {f"mixer:{m}": 10 * sum(1 for x in t.truncated.layer_mixers if x == m) for m in spec.mixers}
    full = {f"mixer:{m}": 10 * sum(1 for x in spec.layer_mixers if x == m) for m in spec.mixers}
    assert extrapolate_by_kind(t, comps, 7) == Fraction(sum(full.values()) + 7)


@pytest.mark.parametrize("name", ["tiny-hybrid", "tiny-moe", "tiny-ssm2"])
def test_extrapolated_flops_equal_full_analytic(name):
    torch = pytest.importorskip("torch")
    from godprof.measure import MeasureConfig
    from godprof.measure.truncate import measure_truncated

    spec = tiny(name)
    cfg = MeasureConfig(batch=1, seq=16, new_tokens=2, dtype="fp32", warmup=0, iters=1, fvcore=False)
    tm = measure_truncated(spec, len(layer_kinds(spec)) + 1, torch.device("cpu"), cfg)
    x = tm.extrapolated
    assert x["flops_forward"]["equal"], x["flops_forward"]
    assert x["note"] == f"extrapolated from {tm.truncation.layers} of {spec.model.num_layers} layers"
    # memory: exact analytic weights and cache of the full model; working set measured on the copy
    est = tm.full_estimate.memory
    assert x["memory"]["weights_bytes"] == est["weights_bytes"]
    assert (
        x["memory"]["peak_bytes"]
        == est["weights_bytes"] + x["memory"]["cache_bytes"] + x["memory"]["working_set_bytes_measured"]
    )
    assert x["tpot_s"] > 0 and x["ttft_s"] > 0  # (their size is timing, not asserted on a shared CPU)


def test_layers_that_fit_is_the_largest_fitting_truncation():
    pytest.importorskip("torch")
    from godprof.measure import MeasureConfig
    from godprof.measure.truncate import full_workload, layers_that_fit

    spec = load_spec("llama-3-70b")
    cfg = MeasureConfig(batch=1, seq=512, new_tokens=32, dtype="bf16")
    free = 80 * 2**30
    n = layers_that_fit(spec, cfg, free, flash=True)
    w = full_workload(cfg, True)
    assert 1 <= n < spec.model.num_layers
    assert estimate(truncate(spec, n).truncated, w).memory["total_bytes"] <= 0.9 * free
    assert estimate(truncate(spec, n + 1).truncated, w).memory["total_bytes"] > 0.9 * free


def _cli(args):
    from typer.testing import CliRunner

    from godprof.cli.main import app

    return CliRunner().invoke(app, args)


def test_cli_layers_json_and_table():
    pytest.importorskip("torch")
    common = ["--device", "cpu", "--seq", "16", "-n", "2", "--iters", "1", "--warmup", "0", "--no-fvcore"]
    r = _cli(["measure", "examples/tiny-hybrid.yaml", "--layers", "4", *common, "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["truncation"]["layers"] == 4 and d["truncation"]["of"] == 8
    assert "extrapolated from 4 of 8 layers" in d["notes"]
    assert d["extrapolated"]["flops_forward"]["equal"] is True
    r = _cli(["measure", "examples/tiny-dense.yaml", "--layers", "2", *common])
    assert r.exit_code == 0, r.output
    assert "extrapolated from 2 of 4 layers" in r.stdout


def test_cli_truncates_by_itself_when_the_model_does_not_fit(monkeypatch):
    pytest.importorskip("torch")
    import godprof.measure as gm

    real = gm.measure

    def full_does_not_fit(spec, dev, cfg, progress=None):
        if spec.model.num_layers == 8:
            raise gm.DoesNotFit(10**9, 3 * 2**20, 2**30, "cpu", "weights and cache alone exceed the available RAM")
        return real(spec, dev, cfg, progress)

    monkeypatch.setattr(gm, "measure", full_does_not_fit)
    common = ["--device", "cpu", "--seq", "16", "-n", "2", "--iters", "1", "--warmup", "0", "--no-fvcore"]
    r = _cli(["measure", "examples/tiny-hybrid.yaml", *common, "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    n = d["truncation"]["layers"]
    assert 3 <= n < 8
    assert any("does not fit" in note for note in d["notes"])
    assert f"extrapolated from {n} of 8 layers" in d["notes"]
