"""``--kernels reference|fused``: selection, fallback and the fused calling conventions, with fake packages.

flash-linear-attention, mamba_ssm and causal_conv1d cannot be installed here (CUDA extensions), so fake
modules stand in for them in ``sys.modules``. The fakes compute what the real kernels are documented to
compute, in plain PyTorch, so a wrong argument order, layout or cache update in godprof's wiring makes
the fused mixer disagree with the reference one.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from godprof.build import build_model
from godprof.build.fused import FusedUnavailable, fused_causal_conv, load_conv
from godprof.cli.main import app
from godprof.measure import MeasureConfig, measure
from godprof.measure.kernels import select_kernels
from godprof.spec import load_spec, parse_spec_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)  # a device object only: nothing is allocated on it
pytestmark = pytest.mark.usefixtures("one_thread")

GDN = """
name: tiny-gdn
family: linear
model: {vocab_size: 97, hidden_size: 32, num_layers: 2}
mixers:
  gdn: {type: gated_deltanet, num_key_heads: 2, num_value_heads: 4, key_head_dim: 8, value_head_dim: 6,
        d_conv: 4, chunk_size: 4}
ffns: {mlp: {type: mlp, intermediate_size: 40}}
"""


def fake_conv_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                 final_states_out=None, activation="silu"):  # fmt: skip
    """causal_conv1d_fn: x [B, D, L], weight [D, W] -> [B, D, L], zeros before the first input."""
    D, W = weight.shape
    out = F.conv1d(x, weight[:, None], bias, padding=W - 1, groups=D)[..., : x.shape[-1]]
    return out if activation is None else F.silu(out)


def fake_conv_update(x, conv_state, weight, bias=None, activation=None):
    """causal_conv1d_update: shift the window left, append x [B, D], convolve the window -> [B, D]."""
    conv_state.copy_(torch.roll(conv_state, -1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state * weight).sum(-1) + (0 if bias is None else bias)
    return out if activation is None else F.silu(out)


@pytest.fixture
def fake_conv(monkeypatch):
    mod = types.ModuleType("causal_conv1d")
    mod.causal_conv1d_fn = fake_conv_fn
    mod.causal_conv1d_update = fake_conv_update
    monkeypatch.setitem(sys.modules, "causal_conv1d", mod)
    return mod


@pytest.fixture
def no_packages(monkeypatch):
    for name in ("causal_conv1d", "fla", "fla.ops", "fla.ops.gated_delta_rule", "mamba_ssm"):
        monkeypatch.setitem(sys.modules, name, None)  # import -> ImportError


def test_fused_needs_cuda_and_the_package(no_packages, fake_conv):
    with pytest.raises(FusedUnavailable, match="CUDA device"):
        load_conv(CPU)
    assert load_conv(CUDA) == (fake_conv_fn, fake_conv_update)
    sys.modules["causal_conv1d"] = None
    with pytest.raises(FusedUnavailable, match="causal_conv1d is not importable"):
        load_conv(CUDA)


def fake_chunk_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                    seq_idx=None, dt_softplus=False, return_final_states=False):  # fmt: skip
    """mamba_chunk_scan_combined: x [B, L, H, P], dt [B, L, H], A [H], B/C [B, L, G, N] -> (y, final state)."""
    from godprof.build.kinds.mamba2 import ssd_chunked

    y, h = ssd_chunked(x, dt, A, B, C, min(chunk_size, x.shape[1]), initial_states)
    return (y, h) if return_final_states else y


def fake_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """selective_state_update: state [B, H, P, N] updated in place; x, dt [B, H, P]; A [H, P, N];
    B, C [B, G, N] shared by H / G heads each -> y [B, H, P]. Mamba-1's form drops the head axis: state
    [B, D, N], x and dt [B, D], A [D, N], B and C [B, N] -> y [B, D]."""
    if state.dim() == 3:
        new = state.float() * torch.exp(dt[..., None] * A) + (dt * x)[..., None] * B[:, None]
        state.copy_(new)
        return torch.einsum("bdn,bn->bd", new, C)
    rep = state.shape[1] // B.shape[1]
    Bh, Ch = B.repeat_interleave(rep, dim=1), C.repeat_interleave(rep, dim=1)  # [B, H, N]
    new = state.float() * torch.exp(dt[..., None] * A) + (dt * x)[..., None] * Bh[:, :, None]
    state.copy_(new)
    return torch.einsum("bhpn,bhn->bhp", new, Ch)


def fake_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False):  # fmt: skip
    """selective_scan_fn: u, delta [B, D, L], A [D, N], B, C [B, N, L], from a zero state -> y [B, D, L]."""
    from godprof.build.kinds.mamba1 import selective_scan

    h0 = torch.zeros(u.shape[0], u.shape[1], A.shape[1])
    y, h = selective_scan(u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), h0)
    y = y.transpose(1, 2)
    return (y, h) if return_last_state else y


@pytest.fixture
def fake_mamba(monkeypatch):
    for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    ssd = types.ModuleType("mamba_ssm.ops.triton.ssd_combined")
    ssd.mamba_chunk_scan_combined = fake_chunk_scan
    upd = types.ModuleType("mamba_ssm.ops.triton.selective_state_update")
    upd.selective_state_update = fake_state_update
    scan = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    scan.selective_scan_fn = fake_selective_scan
    monkeypatch.setitem(sys.modules, scan.__name__, scan)
    monkeypatch.setitem(sys.modules, ssd.__name__, ssd)
    monkeypatch.setitem(sys.modules, upd.__name__, upd)


def test_selection_records_what_each_kind_ran(fake_conv, fake_mamba):
    spec = load_spec(EXAMPLES / "tiny-ssm2.yaml")
    notes: list[str] = []
    k = select_kernels(build_model(spec, device="meta"), "fused", CUDA, notes)
    (name,) = k["by_kind"]
    assert k["by_kind"][name] == {"implementation": "causal_conv1d (conv) + mamba_ssm SSD scan",
                                  "fell_back": False, "reason": None}  # fmt: skip
    assert notes == []
    ref = select_kernels(build_model(spec, device="meta"), "reference", CUDA, notes)
    assert ref["by_kind"][name]["implementation"] == "reference"
    sys.modules["mamba_ssm.ops.triton.ssd_combined"] = None  # a missing package: this kind falls back
    k = select_kernels(build_model(spec, device="meta"), "fused", CUDA, notes)
    assert k["by_kind"][name]["fell_back"] and "mamba_ssm.ops.triton.ssd_combined is not importable" in notes[0]


@pytest.mark.parametrize(("name", "impl"), [("tiny-ssm", "causal_conv1d (conv) + mamba_ssm selective scan"),
                                           ("tiny-ssm2", "causal_conv1d (conv) + mamba_ssm SSD scan")])  # fmt: skip
def test_fused_mamba_scan_wiring_equals_the_reference(name, impl, fake_conv, fake_mamba):
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    ref = build_model(spec, device="cpu", dtype=torch.float32)
    fused = build_model(spec, device="cpu", dtype=torch.float32)
    for mod in fused.modules():
        if hasattr(mod, "_scan_kernels"):
            assert mod.fused(CUDA) == impl
    a, b = ref.allocate_cache(2, 24), fused.allocate_cache(2, 24)
    ids = torch.randint(0, spec.model.vocab_size, (2, 19), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids, cache=b), ref(ids, cache=a), rtol=1e-4, atol=1e-4)
        tok = ids[:, -1:]
        for _ in range(3):
            torch.testing.assert_close(fused(tok, cache=b), ref(tok, cache=a), rtol=1e-4, atol=1e-4)


def test_on_cpu_fused_falls_back_and_says_which_kinds(no_packages):
    notes: list[str] = []
    k = select_kernels(build_model(load_spec(EXAMPLES / "tiny-ssm.yaml"), device="meta"), "fused", CPU, notes)
    assert all(v["fell_back"] and v["implementation"] == "reference" for v in k["by_kind"].values())
    assert notes and "Mamba1Mixer ran the reference" in notes[0] and "CUDA device" in notes[0]
    notes.clear()
    select_kernels(build_model(load_spec(EXAMPLES / "tiny-dense.yaml"), device="meta"), "fused", CPU, notes)
    assert notes == ["--kernels fused: no layer kind of this model has fused kernels; all ran the reference"]


@pytest.mark.parametrize("name", ["tiny-ssm", "tiny-ssm2"])
def test_fused_conv_wiring_equals_the_reference(name, fake_conv, monkeypatch):
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    ref = build_model(spec, device="cpu", dtype=torch.float32)
    fused = build_model(spec, device="cpu", dtype=torch.float32)
    for mod in fused.modules():  # the hooks' kernels, as on CUDA, but run on these CPU tensors
        if hasattr(mod, "_conv_kernels"):
            mod._conv_kernels = load_conv(CUDA)
    a, b = ref.allocate_cache(2, 16), fused.allocate_cache(2, 16)
    ids = torch.randint(0, spec.model.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids, cache=b), ref(ids, cache=a))  # prefill from 0: causal_conv1d_fn
        tok = ids[:, -1:]
        for _ in range(3):  # decode: causal_conv1d_update on the cached window
            torch.testing.assert_close(fused(tok, cache=b), ref(tok, cache=a))
        for sa, sb in zip(a.layers, b.layers, strict=True):
            if sa:
                torch.testing.assert_close(sb[0], sa[0])  # the conv windows agree


def test_fused_causal_conv_without_kernels_is_the_reference():
    conv = torch.nn.Conv1d(4, 4, 3, groups=4)
    x = torch.randn(1, 4, 5)
    from godprof.build.scan import causal_conv

    torch.testing.assert_close(fused_causal_conv(None, conv, x, 0, None), causal_conv(conv, x, 0, None))


def test_gated_deltanet_fused_hook_calls_fla_as_transformers_does(fake_conv, monkeypatch):
    from godprof.build.kinds import gated_deltanet as gdn

    seen = {}

    def chunk(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, **kw):
        seen["chunk"] = (q.shape, g.shape, scale)
        o, h = gdn.chunk_gated_delta_rule(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          g.transpose(1, 2), beta.transpose(1, 2), 8, initial_state)  # fmt: skip
        return o.transpose(1, 2), h

    def recurrent(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, **kw):
        seen["recurrent"] = q.shape
        o, h = gdn.recurrent_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0], initial_state)
        return o[:, None], h

    fla = types.ModuleType("fla.ops.gated_delta_rule")
    fla.chunk_gated_delta_rule, fla.fused_recurrent_gated_delta_rule = chunk, recurrent
    for name in ("fla", "fla.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "fla.ops.gated_delta_rule", fla)
    spec = parse_spec_text(GDN)
    ref = build_model(spec, device="cpu", dtype=torch.float32)
    fused = build_model(spec, device="cpu", dtype=torch.float32)
    for mod in fused.modules():
        if isinstance(mod, gdn.GatedDeltaNetMixer):
            assert mod.fused(CUDA) == "causal_conv1d (conv) + fla gated delta rule"
    a, b = ref.allocate_cache(1, 12), fused.allocate_cache(1, 12)
    ids = torch.randint(0, spec.model.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids, cache=b), ref(ids, cache=a), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fused(ids[:, :1], cache=b), ref(ids[:, :1], cache=a), rtol=1e-4, atol=1e-4)
    assert seen["chunk"][2] == 1.0 and "recurrent" in seen


def test_measure_and_cli_report_the_kernels(no_packages):
    spec = load_spec(EXAMPLES / "tiny-ssm.yaml")
    cfg = MeasureConfig(batch=1, seq=8, new_tokens=2, dtype="fp32", warmup=0, iters=1, flops=False,
                        kernels="fused")  # fmt: skip
    m = measure(spec, CPU, cfg)
    d = m.to_dict()
    assert d["config"]["kernels"] == "fused"
    assert d["measured"]["kernels"]["by_kind"]["Mamba1Mixer"]["fell_back"] is True
    assert any("ran the reference" in n for n in d["notes"])
    with pytest.raises(ValueError, match="--kernels must be one of"):
        MeasureConfig(kernels="fast")
    r = CliRunner().invoke(app, ["measure", str(EXAMPLES / "tiny-ssm.yaml"), "--device", "cpu", "--kernels", "fast"])
    assert r.exit_code == 2
