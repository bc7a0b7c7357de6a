"""`godprof measure` end to end on the CPU: every tiny example, JSON parsed and checked against the
estimate; exit codes of the fault paths (no device, does not fit, compile failure, Ctrl-C)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from godprof.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = sorted(p.stem for p in EXAMPLES.glob("tiny-*.yaml"))
BATCH, SEQ, NEW, ITERS = 2, 16, 3, 3

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    n = torch.get_num_threads()  # --threads 1 below sets torch's global thread count
    yield
    torch.set_num_threads(n)


def run(*args: str):
    return runner.invoke(app, ["measure", *args])


def measure_json(name: str, *extra: str) -> dict:
    r = run(str(EXAMPLES / f"{name}.yaml"), "--device", "cpu", "--format", "json", "--batch", str(BATCH),
            "--seq", str(SEQ), "--new-tokens", str(NEW), "--iters", str(ITERS), "--warmup", "1", "--threads", "1",
            *extra)  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # the progress bar went to stderr: stdout is pure JSON


@pytest.fixture(scope="module")
def results():
    # fvcore's jit trace is the slowest step; test_flop_counters covers it on every family, so here it
    # runs once (tiny-dense) to check the JSON it produces.
    return {name: measure_json(name, *(() if name == "tiny-dense" else ("--no-fvcore",))) for name in TINY}


@pytest.mark.parametrize("name", TINY)
def test_measured_params_and_memory_are_exact(results, name):
    d = results[name]
    est, m = d["estimate"], d["measured"]
    assert est["schema"] == "godprof.estimate/1" and d["schema"] == "godprof.measure/2"
    assert est["workload"]["batch"] == BATCH and est["workload"]["seq"] == SEQ
    assert est["workload"]["context"] == SEQ + NEW  # the cache holds the prompt and every new token
    assert m["params"]["total"] == est["params"]["total"]
    mem, emem = m["memory"], est["memory"]
    # CPU memory is exact tensor bytes: parameters (fp32) and the preallocated cache
    assert mem["weights_bytes"] == emem["weights_bytes"] == 4 * m["params"]["total"]
    assert mem["cache_bytes"] == emem["kv_cache_bytes"] + emem["ssm_state_bytes"]
    transient = max(mem["prefill_transient_peak_bytes"], mem["decode_transient_peak_bytes"])
    assert m["peak_memory_bytes"] == mem["weights_bytes"] + mem["buffers_bytes"] + mem["cache_bytes"] + transient
    # the prefill must at least hold the residual stream, batch x seq x hidden fp32 values
    hidden = 64
    assert mem["prefill_transient_peak_bytes"] >= BATCH * SEQ * hidden * 4
    assert 0 < mem["decode_transient_peak_bytes"] < mem["prefill_transient_peak_bytes"]
    assert isinstance(m["params"]["total"], int) and isinstance(m["peak_memory_bytes"], int)


@pytest.mark.parametrize("name", TINY)
def test_timings_energy_flops_device(results, name):
    m = results[name]["measured"]
    for key, n in (("ttft", ITERS), ("tpot", ITERS * NEW)):
        s = m[key]
        assert s["n"] == n
        assert 0 < s["min_s"] <= s["p10_s"] <= s["median_s"] <= s["p90_s"] <= s["max_s"]
        assert m[f"{key}_s"] == s["median_s"]
    assert m["tokens_per_s"] == pytest.approx(BATCH / m["tpot_s"])
    assert m["prefill_tokens_per_s"] == pytest.approx(BATCH * SEQ / m["ttft_s"])
    assert m["achieved_bandwidth_bytes_per_s"] > 0
    assert m["mbu"] is None and m["mfu_decode"] is None  # no GPU peaks on a CPU
    # energy: plainly unsupported on CPU, null in JSON
    assert m["energy_j_per_token"] is None and m["energy_prefill_j_per_token"] is None
    assert m["energy"]["decode"]["supported"] is False
    assert "not supported on CPU" in m["energy"]["decode"]["reason"]
    # the counted forward is FlopCounterMode's matmul count, which equals the analytic matmul figure
    f = m["flops"]
    assert m["flops_forward"] == f["counters"][0]["matmul"] == f["analytic"]["matmul"]
    if name == "tiny-dense":
        assert f["counters"][1]["counter"] == "fvcore.FlopCountAnalysis" and f["counters"][1]["available"]
        assert f["counters"][1]["matmul"] == m["flops_forward"]
        assert f["counters"][1]["matmul_error"] == 0
    else:
        assert len(f["counters"]) == 1  # --no-fvcore
    assert m["device"]["type"] == "cpu" and m["device"]["torch"] == torch.__version__
    assert m["device"]["threads"] == 1


def test_table_output_shows_the_side_by_side():
    r = run(str(EXAMPLES / "tiny-dense.yaml"), "--device", "cpu", "--seq", "8", "--new-tokens", "2", "--iters", "2",
            "--warmup", "0", "--threads", "1", "--no-fvcore")  # fmt: skip
    assert r.exit_code == 0, r.output
    out = r.stdout
    for text in ("Estimate vs measured", "parameters", "peak memory", "TTFT", "TPOT", "forward FLOPs",
                 "not supported", "Forward FLOPs", "exact tensor bytes"):  # fmt: skip
        assert text in out, text


# --------------------------------------------------------------------------- fault paths


def one_error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in r.output
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
@pytest.mark.parametrize("args", [("--gpu", "0"), ("--device", "cuda:1"), ()])
def test_no_cuda_exits_4_with_one_line(args):
    r = run(str(EXAMPLES / "tiny-dense.yaml"), *args)
    assert r.exit_code == 4
    assert "CUDA" in one_error_line(r)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--device", "tpu"), "unknown device"),
        (("--device", "cpu", "--gpu", "0"), "disagree"),
        (("--device", "cpu", "--dtype", "int4"), "fp32, bf16 or fp16"),
        (("--device", "cpu", "--seq", "lots"), "--seq"),
    ],
)
def test_usage_errors_exit_2(args, message):
    r = run(str(EXAMPLES / "tiny-dense.yaml"), *args)
    assert r.exit_code == 2
    assert message in one_error_line(r)


def test_unknown_spec_exits_2():
    r = run("no-such-model", "--device", "cpu")
    assert r.exit_code == 2
    assert "no-such-model" in one_error_line(r)


def test_too_big_for_the_host_is_refused_before_building():
    # llama-3.1-405b in fp32: 4 x 405.9e9 B = 1.6 TB of weights, more than any CI machine's RAM; the
    # check runs before a single tensor is allocated.
    r = run("llama-3.1-405b", "--device", "cpu")
    assert r.exit_code == 3
    line = one_error_line(r)
    assert "does not fit on cpu" in line and "1,6" in line and "available RAM" in line


def test_out_of_memory_becomes_does_not_fit(monkeypatch):
    import godprof.build

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(godprof.build, "build_model", oom)
    r = run(str(EXAMPLES / "tiny-dense.yaml"), "--device", "cpu")
    assert r.exit_code == 3
    line = one_error_line(r)
    assert "does not fit" in line and "estimate needs" in line and "out of memory" in line


def test_ctrl_c_exits_130(monkeypatch):
    import godprof.build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(godprof.build, "build_model", interrupted)
    r = run(str(EXAMPLES / "tiny-dense.yaml"), "--device", "cpu")
    assert r.exit_code == 130
    assert "Traceback" not in r.output


def test_compile_failure_is_a_clear_error(monkeypatch):
    def broken_compile(fn, *args, **kwargs):
        def compiled(*a, **k):
            raise RuntimeError("inductor: no C++ compiler found\nlong details")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    r = run(str(EXAMPLES / "tiny-dense.yaml"), "--device", "cpu", "--compile", "--seq", "8", "--new-tokens", "2",
            "--iters", "1", "--warmup", "0")  # fmt: skip
    assert r.exit_code == 2
    line = one_error_line(r)
    assert "torch.compile failed" in line and "no C++ compiler" in line and "without --compile" in line
