"""Workload and swarm files (one-line errors with the line), and swarm plans against one dense model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from godprof.cli.main import app
from godprof.errors import GodprofError
from godprof.plan.swarm import load_swarm
from godprof.plan.workload import ServingWorkload, load_workload, parse_duration_s

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- workload files


def test_durations():
    assert parse_duration_s("50ms") == pytest.approx(0.05)
    assert parse_duration_s("1s") == 1.0
    assert parse_duration_s(0.2) == 0.2
    assert parse_duration_s("200us") == pytest.approx(2e-4)
    for bad in ("fast", "-1s", 0, "5 parsecs", True):
        with pytest.raises(ValueError):
            parse_duration_s(bad)


def test_example_chat_workload_loads():
    wl = load_workload(EXAMPLES / "workload-chat.yaml")
    assert (wl.prompt_tokens, wl.output_tokens, wl.rate_per_s, wl.concurrency) == (2048, 384, 20.0, None)
    assert wl.slo_ttft_s == 1.0 and wl.slo_tpot_s == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("prompt_tokens: -5\noutput_tokens: 10\n", 1, "prompt_tokens: must be positive, got -5"),
        ("prompt_tokens: 100\noutput_tokens: many\n", 2, "output_tokens: expected an integer"),
        ("prompt_tokens: 100\noutput_tokens: 10\nslo:\n  tpot: soon\n", 4, "slo.tpot: not a duration"),
        ("prompt_tokens: 100\noutput_tokens: 10\nconcurrency: 4\nrate: 2\n", 4, "not both"),
        ("prompt_tokens: 100\noutput_tokens: 10\nsamples_per_promt: 2\n", 3, "did you mean 'samples_per_prompt'"),
        ("prompt_tokens: 100\noutput_tokens: 10\ndtype: bf15\n", 3, "unknown dtype"),
        ("prompt_tokens: 100\noutput_tokens: [10\n", 3, "invalid YAML"),
    ],
)
def test_bad_workload_values_are_one_line_errors_with_the_line(tmp_path, body, line, needle):
    p = write(tmp_path, "w.yaml", body)
    with pytest.raises(GodprofError) as e:
        load_workload(p)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    assert msg.startswith(f"{p}:{line}:"), msg
    assert needle in msg
    r = runner.invoke(app, ["plan", "llama-3-8b", "--workload", str(p)])
    assert r.exit_code == 2
    assert f"{p.name}:{line}:" in r.output and "Traceback" not in r.output


def test_options_override_the_workload_file(tmp_path):
    p = write(tmp_path, "w.yaml", "prompt_tokens: 4096\noutput_tokens: 128\nconcurrency: 4\n")
    r = runner.invoke(app, ["plan", "llama-3-8b", "-w", str(p), "--output-tokens", "64", "--rate", "2", "-f", "json"])
    assert r.exit_code == 0, r.output
    wl = json.loads(r.stdout)["workload"]
    assert (wl["prompt_tokens"], wl["output_tokens"], wl["rate_per_s"], wl["concurrency"]) == (4096, 64, 2.0, None)


def test_scaled_workload():
    assert ServingWorkload(rate_per_s=10).scaled(0.25).rate_per_s == 2.5
    assert ServingWorkload(concurrency=10).scaled(0.25).concurrency == 3  # ceil(2.5)
    assert ServingWorkload(concurrency=10).scaled(0.01).concurrency == 1


# --------------------------------------------------------------------------- swarm files


def test_example_swarm_loads():
    s = load_swarm(EXAMPLES / "swarm.yaml")
    assert s.router_ref == "qwen3-0.6b" and len(s.members) == 4
    assert sum(m.share for m in s.members) == pytest.approx(1.0)
    assert s.workload is not None and s.workload.rate_per_s == 20


def test_bad_swarm_shares_and_keys(tmp_path):
    p = write(tmp_path, "s.yaml", (
        "name: bad\n"
        "specialists:\n"
        "  - {name: a, spec: llama-3-8b, share: 0.5}\n"
        "  - {name: b, spec: llama-3-8b, share: 0.4}\n"
    ))  # fmt: skip
    with pytest.raises(GodprofError, match=r"s\.yaml:2: specialists: shares add up to 0\.9, not 1"):
        load_swarm(p)
    p = write(tmp_path, "s2.yaml", (
        "specialists:\n"
        "  - {name: a, spec: llama-3-8b, share: 1}\n"
        "workload:\n"
        "  prompt_tokens: 10\n"
        "  output_tokens: 0\n"
    ))  # fmt: skip
    with pytest.raises(GodprofError, match=r"s2\.yaml:5: workload\.output_tokens: must be positive"):
        load_swarm(p)
    r = runner.invoke(app, ["plan", str(p)])
    assert r.exit_code == 2 and "s2.yaml:5:" in r.output


def test_swarm_sums_members_and_compares_with_a_dense_model():
    r = runner.invoke(app, ["plan", str(EXAMPLES / "swarm.yaml"), "--gpu", "h100", "--against", "llama-3-70b",
                            "--usd-per-gpu-hour", "2", "--format", "json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    members = d["members"]
    assert [m["role"] for m in members] == ["router", "specialist", "specialist", "specialist", "specialist"]
    t = d["totals"]
    assert d["fits"] and d["gpus"] == t["gpus"] == sum(m["plan"]["gpus"] for m in members)
    assert t["tokens_per_s"] == pytest.approx(sum(m["plan"]["chosen"]["tokens_per_s"] for m in members[1:]))
    assert t["usd_per_million_tokens"] == pytest.approx(t["gpus"] * 2 / 3600 / t["tokens_per_s"] * 1e6)
    # each specialist carries its share of 20 requests/s
    for m in members[1:]:
        assert m["plan"]["workload"]["rate_per_s"] == pytest.approx(20 * m["share"])
        assert m["plan"]["chosen"]["requests_per_s"] >= 20 * m["share"] * (1 - 1e-9)
    # TTFT through the swarm = router response (TTFT + 4 tokens) + the specialist's TTFT
    router = members[0]["plan"]["chosen"]
    assert t["router_latency_s"] == pytest.approx(router["ttft_s"] + 4 * router["tpot_s"])
    dense = d["against_totals"]
    assert dense["fits"] and d["against"]["spec"]["name"] == "llama-3-70b"
    # bf16 weights, 2 B per parameter: router Qwen3-0.6B 596,049,920; Qwen2.5-7B 7,615,616,512 (twice: code
    # and math); Llama-3-8B 8,030,261,248; Mistral-7B 7,241,732,096 -> 31,099,276,288 params = 62.2 GB.
    # One Llama-3-70B holds 70,553,706,496 x 2 = 141.1 GB.
    assert t["weights_bytes"] == 2 * (596_049_920 + 2 * 7_615_616_512 + 8_030_261_248 + 7_241_732_096)
    assert dense["weights_bytes"] == 141_107_412_992
    # serving the same 20 requests/s, the 8B swarm needs fewer GPUs and less energy per token than a 70B
    assert t["gpus"] < dense["gpus"]
    assert t["energy_kwh_per_million_tokens"] < dense["energy_kwh_per_million_tokens"]


def test_swarm_reports_and_caps(tmp_path):
    r = runner.invoke(app, ["plan", str(EXAMPLES / "swarm.yaml"), "--against", "llama-3-70b", "--format", "md",
                            "--no-plot"])  # fmt: skip
    assert r.exit_code == 0 and "vs one dense model, same traffic" in r.stdout
    r = runner.invoke(app, ["plan", str(EXAMPLES / "swarm.yaml"), "--max-gpus", "2", "-f", "json"])
    assert r.exit_code == 3 and json.loads(r.stdout)["missing"].startswith("the swarm needs")
    r = runner.invoke(app, ["plan", "llama-3-8b", "--against", "llama-3-70b"])
    assert r.exit_code == 2 and "swarm" in r.output
