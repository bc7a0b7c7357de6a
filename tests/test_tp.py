"""Tensor-parallel build and measurement (``torchrun ... godprof measure SPEC --tp N``) on the CPU with gloo:
per-rank counts against the analytic split, TP=2 logits against TP=1 logits, and the CLI end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from godprof.analytic import Workload, count_params, estimate
from godprof.analytic.tensor_parallel import TensorParallelError, allreduces_per_forward, rank_spec
from godprof.dtypes import get_dtype
from godprof.plan.layout import Layout, stage_shares
from godprof.spec import load_spec, parse_spec_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# biases on q/k/v/o and the MLP (row-parallel biases are added once), tied embeddings (the head reads the
# vocab-parallel embedding), learned positions, sinks, per-head qk norm, an output gate, and one KV head
# for two ranks (replicated)
ODD = """
name: tiny-tp-odd
family: dense
model: {vocab_size: 256, hidden_size: 64, num_layers: 2, norm: layernorm, tie_embeddings: true,
        position_embedding: learned, max_position_embeddings: 64}
mixers:
  attn: {type: attention, num_heads: 4, num_kv_heads: 1, head_dim: 16, qkv_bias: true, o_bias: true,
         sinks: true, qk_norm: true, output_gate: true}
ffns:
  mlp: {type: mlp, intermediate_size: 128, gated: false, activation: gelu, bias: true}
"""


@pytest.mark.parametrize("name,tp", [("llama-3-8b", 8), ("llama-3-70b", 4), ("qwen2.5-7b", 4)])
def test_rank_spec_is_the_plan_share_plus_replicated_norms(name, tp):
    spec = load_spec(name)
    rs = rank_spec(spec, tp)
    counts = count_params(spec)
    rank = count_params(rs)
    # every matrix (and column-parallel bias) is split exactly tp ways; only the norms are replicated
    norms = counts.by_component["norms"]
    assert tp * rank.total - counts.total == (tp - 1) * norms
    share = stage_shares(spec, counts, estimate(spec).memory["weights_bytes"], get_dtype("bf16"), Layout(tp=tp))[0]
    assert rank.total - share.params == pytest.approx(norms * (tp - 1) / tp)
    # the rank's KV cache is the plan's split (KV heads split, or one replicated head per rank)
    w = Workload(batch=2, seq=128, context=256, dtype="bf16")
    kv_rank = estimate(rs, w).memory["kv_cache_bytes"]
    assert kv_rank == pytest.approx(estimate(spec, w).memory["kv_cache_bytes"] * share.kv_split[0])
    assert allreduces_per_forward(spec) == 2 * spec.model.num_layers + 1


@pytest.mark.parametrize("name,tp", [("mixtral-8x7b", 8), ("qwen1.5-moe-a2.7b", 4)])
def test_moe_rank_spec_splits_inside_the_experts(name, tp):
    spec = load_spec(name)
    counts, rank = count_params(spec), count_params(rank_spec(spec, tp))
    replicated = counts.by_component["norms"] + counts.by_component["router"]  # routers: every rank routes
    gates = [lay for lay in spec.layers() if lay.ffn is not None and lay.ffn.shared_expert_gate]
    replicated += spec.model.hidden_size * len(gates)  # the shared expert's gate, Linear(hidden, 1)
    assert tp * rank.total - counts.total == (tp - 1) * replicated
    assert tp * rank.by_component["routed_experts"] == counts.by_component["routed_experts"]


def test_kinds_that_cannot_split_say_why():
    tiny_dense = (EXAMPLES / "tiny-dense.yaml").read_text()
    with pytest.raises(TensorParallelError, match="mixer 'mamba' .*mamba1.* cannot split 2 ways"):
        rank_spec(load_spec(str(EXAMPLES / "tiny-ssm.yaml")), 2)
    with pytest.raises(TensorParallelError, match="4 attention heads do not split 3 ways"):
        rank_spec(parse_spec_text(tiny_dense), 3)
    wide = tiny_dense.replace("num_heads: 4, num_kv_heads: 2", "num_heads: 8, num_kv_heads: 8")
    with pytest.raises(TensorParallelError, match="intermediate_size 172 does not split 8 ways"):
        rank_spec(parse_spec_text(wide), 8)
    with pytest.raises(TensorParallelError, match="vocab_size 256 does not split 3 ways"):
        rank_spec(parse_spec_text(ODD.replace("num_heads: 4,", "num_heads: 3,").replace("128,", "129,")), 3)
    with pytest.raises(TensorParallelError, match="mixer 'mla' .*cannot split 2 ways"):
        rank_spec(load_spec(str(EXAMPLES / "tiny-mla.yaml")), 2)
    odd_moe = (EXAMPLES / "tiny-moe.yaml").read_text().replace("intermediate_size: 48", "intermediate_size: 49")
    with pytest.raises(TensorParallelError, match="expert width 49 / 96 does not split 2 ways"):
        rank_spec(parse_spec_text(odd_moe), 2)


WORKER = """
import datetime, json, sys, torch, torch.distributed as dist
from godprof.analytic import count_params
from godprof.analytic.tensor_parallel import rank_spec
from godprof.build import build_model
from godprof.build.tp import full_in_features, parallelize, shard_from
from godprof.spec import load_spec

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
rank, tp = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
out = {}
for path in sys.argv[2:]:
    spec = load_spec(path)
    full = build_model(spec, "cpu", torch.float32, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero biases and norm weights, so every split is exercised
        for p in full.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    model = build_model(rank_spec(spec, tp), "cpu", torch.float32, seed=5)
    shard_from(model, full, rank, tp)
    parallelize(model, rank, tp, None, full_in_features(spec))
    ids = torch.randint(0, spec.model.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = full(ids), model(ids)
        c_full, c_rank = full.allocate_cache(2, 16), model.allocate_cache(2, 16)
        full(ids, cache=c_full)
        model(ids, cache=c_rank)
        step_ref, step_got = full(ids[:, :1], cache=c_full), model(ids[:, :1], cache=c_rank)
    out[path] = {
        "params": sum(p.numel() for p in model.parameters()),
        "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "analytic": count_params(rank_spec(spec, tp)).total,
        "logits_diff": (ref - got).abs().max().item(),
        "logits_scale": ref.abs().max().item(),
        "decode_diff": (step_ref - step_got).abs().max().item(),
    }
rows = [None] * tp
dist.all_gather_object(rows, out)
if rank == 0:
    open(sys.argv[1], "w").write(json.dumps(rows))
dist.destroy_process_group()
"""

# MoE inside the experts: gpt-oss-style interleaved clamped SwiGLU with expert and router biases, and
# a shared expert behind its gate (tiny-moe)
MOE_ODD = """
name: tiny-tp-moe
family: moe
model: {vocab_size: 256, hidden_size: 64, num_layers: 2}
mixers:
  attn: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 16, sinks: true}
ffns:
  moe: {type: moe, num_experts: 4, top_k: 2, expert_intermediate_size: 32, activation: swiglu_oai,
        expert_bias: true, router_bias: true}
"""


def _torchrun(tmp_path: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """torchrun with 2 CPU ranks in a session of its own, killed whole (workers too) on timeout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                         start_new_session=True)  # fmt: skip
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s: {' '.join(args)}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_tp2_logits_equal_tp1_and_rank_params_equal_the_analytic_split(tmp_path):
    """Dense, odd dense (biases, tied, replicated KV head) and MoE (inside the experts) specs."""
    pytest.importorskip("torch")
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    odd, moe_odd = tmp_path / "odd.yaml", tmp_path / "moe.yaml"
    odd.write_text(ODD)
    moe_odd.write_text(MOE_ODD)
    dense = str(EXAMPLES / "tiny-dense.yaml")
    specs = [dense, str(odd), str(moe_odd), str(EXAMPLES / "tiny-moe.yaml")]
    r = _torchrun(tmp_path, "worker.py", str(tmp_path / "out.json"), *specs)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "out.json").read_text())
    for per_rank in rows:
        assert set(per_rank) == set(specs)
        for path, x in per_rank.items():
            assert x["params"] == x["analytic"], path
            assert x["param_bytes"] == 4 * x["analytic"], path
            assert x["logits_diff"] <= 1e-5 * max(1.0, x["logits_scale"]), (path, x)
            assert x["decode_diff"] <= 1e-5 * max(1.0, x["logits_scale"]), (path, x)
    spec = load_spec(dense)
    assert 2 * rows[0][dense]["params"] - count_params(spec).total == (2 - 1) * count_params(spec).by_component["norms"]


def test_cli_under_torchrun_reports_one_table_from_rank_0(tmp_path):
    pytest.importorskip("torch")
    args = ["-m", "godprof", "measure", str(EXAMPLES / "tiny-dense.yaml"), "--device", "cpu", "--tp", "2",
            "--seq", "16", "-n", "2", "--iters", "2", "--warmup", "0"]  # fmt: skip
    r = _torchrun(tmp_path, *args, "-f", "json")
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)  # only rank 0 prints
    assert d["tp"] == 2 and d["backend"] == "gloo" and len(d["ranks"]) == 2
    for row in d["ranks"]:
        assert row["params"] == row["params_analytic"]
        assert row["weights_bytes"] == row["weights_bytes_analytic"]
        assert row["cache_bytes"] == row["cache_bytes_analytic"]
        assert row["params"] > row["params_plan"]  # the plan counts replicated norms as split
    assert d["allreduce"]["per_forward"] == 9 and d["allreduce"]["decode"]["measured_s"] > 0


def test_tp_outside_torchrun_is_a_clear_error():
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from godprof.cli.main import app

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    r = CliRunner().invoke(app, ["measure", str(EXAMPLES / "tiny-dense.yaml"), "--device", "cpu", "--tp", "2"],
                           env=env)  # fmt: skip
    assert r.exit_code == 2
    assert "torchrun --nproc-per-node 2 -m godprof measure SPEC --tp 2" in r.output
