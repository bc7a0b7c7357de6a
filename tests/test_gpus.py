"""The GPU database: every bundled entry loads, has a source, plausible units and datasheet figures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from godprof.cli.main import app
from godprof.errors import NotFoundError, SpecError
from godprof.gpus import GIB, find_gpu_for_device, list_gpus, load_gpu

runner = CliRunner()

EXPECTED = {
    "h100-sxm", "h100-pcie", "h200", "b200", "a100-40gb", "a100-80gb", "l40s", "l4", "rtx-4090", "mi300x",
    "h800", "h20", "b300", "gb200", "mi325x", "mi355x", "tpu-v5e", "tpu-v5p", "tpu-v6e",
}  # fmt: skip


def test_bundled_database_loads_with_sources_and_plausible_units():
    gpus = list_gpus()
    assert {g.key for g in gpus} == EXPECTED
    for g in gpus:
        assert g.source.startswith("https://"), g.key
        assert 14 * GIB <= g.memory_bytes <= 288 * GIB, g.key  # bytes, not GB or GiB figures
        assert 2e11 <= g.hbm_bandwidth_bytes_per_s <= 1e13, g.key  # bytes/s: 300 GB/s (L4) .. 8 TB/s (B200)
        # per direction: 32 GB/s (PCIe 4 x16) .. 900 GB/s (NVLink 5)
        assert 1e10 <= g.interconnect_bytes_per_s <= 1e12, g.key
        if "tdp_w" in g.omitted:  # unpublished (TPUs, GB200 per GPU): unknown, never guessed
            assert g.tdp_w == 0 and g.to_dict()["tdp_w"] is None, g.key
        else:
            assert 50 <= g.tdp_w <= 1400, g.key
        p = g.peak_flops_per_s
        assert 1e14 <= p["bf16"] <= 5e15, g.key  # FLOP/s, not TFLOP/s
        assert p.get("fp16", p["bf16"]) == p["bf16"], g.key
        assert p.get("fp32", 0) <= p.get("tf32", p["bf16"]) <= p["bf16"], g.key
        if "fp8" in p:
            assert p["fp8"] >= p["bf16"], g.key
        if "int8" in p and g.key != "b300":  # Blackwell Ultra cut INT8 to 125 TOPS dense
            assert p["int8"] >= p["bf16"], g.key
        assert g.interconnect in ("nvlink", "pcie", "infinity-fabric", "ici")
        if g.usd_per_hour is not None:  # a price always says where and when it was published
            assert 0.1 < g.usd_per_hour < 20 and g.usd_per_hour_source and g.usd_per_hour_date, g.key
            assert str(g.usd_per_hour_source).startswith("https://"), g.key


def test_datasheet_figures_are_the_dense_ones():
    h100 = load_gpu("h100")
    assert h100.key == "h100-sxm"
    assert h100.memory_bytes == 80 * 2**30
    assert h100.hbm_bandwidth_bytes_per_s == pytest.approx(3.35e12)
    # dense bf16 989.4 TFLOP/s; the 1,979 on the datasheet is 2:4 sparsity and must not be here
    assert h100.peak_flops("bf16") == pytest.approx(989.4e12)
    assert h100.peak_flops("fp8") == pytest.approx(1978.9e12)
    assert h100.interconnect_bytes_per_s == pytest.approx(450e9)  # 900 GB/s NVLink 4 counts both directions
    h200 = load_gpu("h200")
    assert h200.peak_flops("bf16") == h100.peak_flops("bf16")  # same die, more and faster memory
    assert (h200.memory_bytes, h200.hbm_bandwidth_bytes_per_s) == (141 * 2**30, pytest.approx(4.8e12))
    mi = load_gpu("MI300X")
    assert (mi.vendor, mi.memory_bytes) == ("amd", 192 * 2**30)
    assert mi.peak_flops("bf16") == pytest.approx(1307.4e12)
    assert load_gpu("a100-80gb").hbm_bandwidth_bytes_per_s == pytest.approx(2.039e12)
    assert load_gpu("l4").peak_flops("fp8") == pytest.approx(242.5e12)


def test_peak_flops_int4_computes_in_bf16_and_missing_dtypes_raise():
    a100 = load_gpu("a100-40gb")
    assert a100.peak_flops("int4") == a100.peak_flops("bf16") == pytest.approx(312e12)
    with pytest.raises(NotFoundError, match="no fp8 peak"):
        a100.peak_flops("fp8")


@pytest.mark.parametrize(
    "name, key",
    [("H100", "h100-sxm"), ("nvidia h100 sxm5 80gb", "h100-sxm"), ("H100_SXM5", "h100-sxm"),
     ("4090", "rtx-4090"), ("a100-80gb", "a100-80gb"), ("mi300", "mi300x")],
)  # fmt: skip
def test_lookup_by_key_alias_or_name(name, key):
    assert load_gpu(name).key == key


def test_unknown_gpu_names_the_nearest():
    with pytest.raises(NotFoundError) as e:
        load_gpu("h10")
    assert "did you mean" in str(e.value) and "h100" in str(e.value)
    with pytest.raises(NotFoundError, match="mi300"):
        load_gpu("mi30x")
    r = runner.invoke(app, ["compare", "llama-3-8b", "--gpu", "h1000"])
    assert r.exit_code == 2
    assert "unknown GPU 'h1000'" in r.output and "did you mean" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["gpus", "rtx4080"])
    assert r.exit_code == 2 and "rtx4090" in r.output


@pytest.mark.parametrize(
    "device, key",
    [("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA L4", "l4"),
     ("NVIDIA L40S", "l40s"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA A100 80GB PCIe", "a100-80gb"),
     ("NVIDIA GeForce RTX 4090", "rtx-4090"), ("AMD Instinct MI300X", "mi300x"), ("NVIDIA H200", "h200"),
     ("Tesla T4", None)],
)  # fmt: skip
def test_find_gpu_for_device_matches_whole_words(device, key):
    g = find_gpu_for_device(device)
    assert (g.key if g else None) == key


def test_user_gpu_file_with_measured_block(tmp_path):
    f = tmp_path / "my-card.yaml"
    f.write_text(
        "name: My Card\nvendor: acme\naliases: [mine]\nsource: https://example.com/my-card\nmemory_gb: 32\n"
        "hbm_bandwidth_bytes_per_s: 1.0e12\npeak_tflops: {bf16: 200, fp8: 400}\ntdp_w: 300\n"
        "interconnect: pcie\n"
        "interconnect_gb_per_s: 64\nmeasured: {copy_bandwidth_gb_per_s: 850, matmul_tflops: {bf16: 150}}\n"
    )
    g = load_gpu("MINE", [f])
    assert g.key == "my-card" and g.memory_bytes == 32 * 10**9 and g.hbm_bandwidth_bytes_per_s == 1e12
    assert g.measured is not None and g.measured.bandwidth_bytes_per_s == pytest.approx(850e9)
    assert g.measured.flops_per_s == {"bf16": pytest.approx(150e12)}
    assert len(list_gpus([f])) == len(EXPECTED) + 1
    r = runner.invoke(app, ["gpus", "--gpu-file", str(f), "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = {d["key"]: d for d in json.loads(r.stdout)["gpus"]}
    mine = rows["my-card"]
    assert mine["memory_bytes"] == 32 * 10**9 and mine["measured"]["flops_per_s"]["bf16"] == 150e12
    assert rows["h100-sxm"]["hbm_bandwidth_bytes_per_s"] == 3_350_000_000_000
    # the calibrated card reaches the roofline: measured rates replace datasheet x efficiency
    r = runner.invoke(app, ["compare", "llama-3-8b", "--gpu", "mine", "--gpu-file", str(f), "-f", "json"])
    assert r.exit_code == 0, r.output
    roof = json.loads(r.stdout)["records"][0]["roofline"]
    assert (roof["gpu"], roof["basis"]) == ("my-card", "measured")
    assert (roof["bytes_per_s"], roof["flops_per_s"]) == (850e9, 150e12)


def test_bad_gpu_file_lists_every_problem(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: Bad\nvendor: x\nmemory_gib: 24\nmemory_gb: 24\nhbm_bandwidth_gb_per_s: -1\n"
                 "peak_tflops: {bf61: 100}\ntdp_watts: 300\ninterconnect: pcie\n"
                 "interconnect_gb_per_s: 32\n")  # fmt: skip
    with pytest.raises(SpecError) as e:
        load_gpu("bad", [f])
    msg = str(e.value)
    for fragment in (  # a user's file may leave out source (it defaults to the file), tdp_w and links
        "exactly one of memory_gib",
        "hbm_bandwidth_gb_per_s",
        "unknown dtype 'bf61'; did you mean 'bf16'?",
        "unknown key 'tdp_watts'; did you mean 'tdp_w'?",
    ):
        assert fragment in msg, fragment  # fmt: skip
    r = runner.invoke(app, ["gpus", "--gpu-file", str(f)])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_gpus_command_formats():
    r = runner.invoke(app, ["gpus"])
    assert r.exit_code == 0 and "h100-sxm" in r.stdout and "mi300x" in r.stdout
    md = runner.invoke(app, ["gpus", "-f", "md"]).stdout
    assert md.startswith("### GPUs") and "| l40s |" in md
    csv_text = runner.invoke(app, ["gpus", "-f", "csv"]).stdout
    assert len(csv_text.strip().splitlines()) == len(EXPECTED) + 1
    one = json.loads(runner.invoke(app, ["gpus", "b200", "-f", "json"]).stdout)["gpus"]
    assert [d["key"] for d in one] == ["b200"] and one[0]["peak_flops_per_s"]["fp8"] == pytest.approx(4.5e15)


def test_new_cards_per_gpu_figures_from_their_datasheets():
    """Per-GPU dense figures derived from the cited system tables (see each YAML's comment)."""
    gb = load_gpu("gb200")  # NVL72: 360 PF sparse bf16 / 72 / 2; 13.4 TB / 72; 576 TB/s / 72
    assert gb.peak_flops("bf16") == pytest.approx(2.5e15) and gb.peak_flops("fp8") == pytest.approx(5e15)
    assert gb.memory_bytes == 186 * GIB and gb.hbm_bandwidth_bytes_per_s == pytest.approx(8e12)
    assert "tdp_w" in gb.omitted
    b300 = load_gpu("hgx-b300")  # HGX B300: 36 PF sparse bf16 / 8 / 2; FP4 108 PF dense / 8
    assert b300.key == "b300" and b300.peak_flops("bf16") == pytest.approx(2.25e15)
    assert b300.peak_flops_per_s["fp4"] == pytest.approx(13.5e15) and b300.memory_bytes == 288 * GIB
    h800, h100 = load_gpu("h800"), load_gpu("h100")
    assert h800.peak_flops("bf16") == h100.peak_flops("bf16") and h800.memory_bytes == h100.memory_bytes
    assert h800.interconnect_bytes_per_s == pytest.approx(200e9)  # NVLink 400 GB/s both ways (H100: 900)
    h20 = load_gpu("h20")
    assert (h20.memory_bytes, h20.peak_flops("bf16"), h20.tdp_w) == (96 * GIB, pytest.approx(148e12), 400)
    assert load_gpu("mi325x").memory_bytes == 256 * GIB and load_gpu("mi355x").tdp_w == 1400
    v6e = load_gpu("trillium")
    assert v6e.key == "tpu-v6e" and v6e.vendor == "google" and v6e.interconnect == "ici"
    assert v6e.peak_flops("bf16") == pytest.approx(918e12) and v6e.memory_bytes == 32 * 10**9
    assert load_gpu("v5p").memory_bytes == 95 * GIB and load_gpu("v5e").hbm_bandwidth_bytes_per_s == pytest.approx(
        819e9
    )
    # estimate and compare work on a TPU; plan needs a TDP for energy and says so
    r = runner.invoke(app, ["compare", "llama-3-8b", "--gpu", "tpu-v6e", "-f", "json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["plan", "llama-3-8b", "--gpu", "tpu-v6e"])
    assert r.exit_code == 2 and "tdp_w" in r.output


def test_prices_per_gpu_from_the_database_or_the_option():
    from godprof.plan.power import gpu_price, parse_prices

    assert parse_prices("2.5") == (2.5, {})
    assert parse_prices("h100=2.5,b200=5") == (None, {"h100": 2.5, "b200": 5.0})
    assert parse_prices("2, b200=5") == (2.0, {"b200": 5.0})
    for bad in ("h100=", "=3", "2,3", "cheap", "h100=-1", ""):
        with pytest.raises(ValueError, match="--usd-per-gpu-hour"):
            parse_prices(bad)
    h100, b200 = load_gpu("h100"), load_gpu("b200")
    assert h100.usd_per_hour == pytest.approx(4.916) and h100.usd_per_hour_date == "2024-12"
    assert b200.usd_per_hour is None  # no sourced price: absent, never guessed
    assert gpu_price(h100, None, None) == pytest.approx(4.916)  # the database's published price
    assert gpu_price(h100, None, 3.0) == 3.0 and gpu_price(h100, {"h100-sxm": 2.0}, 3.0) == 2.0
    assert gpu_price(b200, None, None) is None

    def plan(*args: str) -> dict:
        r = runner.invoke(app, ["plan", "llama-3-8b", "--gpu", "h100,b200", "--concurrency", "64", "-f", "json",
                                *args])  # fmt: skip
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    def per_mtok(d: dict, key: str) -> float | None:
        cands = [d["chosen"], *d["alternatives"]]
        return next(c["usd_per_million_tokens"] for c in cands if c["gpu"] == key and c["fits"])

    d = plan("--usd-per-gpu-hour", "h100=2.5,b200=5")
    h, b = per_mtok(d, "h100-sxm"), per_mtok(d, "b200")
    assert h is not None and b is not None
    flat = plan("--usd-per-gpu-hour", "2.5")
    assert per_mtok(flat, "h100-sxm") == pytest.approx(h) and per_mtok(flat, "b200") == pytest.approx(b / 2)
    default = plan()  # H100 at its published price, B200 without one
    assert per_mtok(default, "h100-sxm") == pytest.approx(h * 4.916 / 2.5) and per_mtok(default, "b200") is None
    r = runner.invoke(app, ["plan", "llama-3-8b", "--usd-per-gpu-hour", "h100=two"])
    assert r.exit_code == 2 and "--usd-per-gpu-hour" in r.output


def test_four_bit_kv_cache_formats():
    """--kv-dtype int4: 4 bits + an fp16 scale and zero point per 128 values (4.25 bits); fp4 = NVFP4: 4 bits
    + one E4M3 scale per 16 (4.5 bits). Llama-3-8B at 8,192 tokens: 1 GiB of bf16 KV."""
    from godprof.analytic import Workload, estimate
    from godprof.spec import load_spec

    spec = load_spec("llama-3-8b")
    kv = {d: estimate(spec, Workload(seq=8192, kv_dtype=d)).memory["kv_cache_bytes"] for d in ("bf16", "int4", "fp4")}
    assert kv["bf16"] == 2**30
    assert kv["int4"] == 2**30 // 16 * 4.25 == 285_212_672
    assert kv["fp4"] == 2**30 // 16 * 4.5 == 301_989_888
    r = runner.invoke(app, ["compare", "llama-3-8b", "--kv-dtype", "fp4", "--context", "8192", "-f", "json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)["records"][0]
    assert rec["memory"]["kv_cache_bytes"] == kv["fp4"] and rec["workload"]["kv_dtype"] == "nvfp4"
