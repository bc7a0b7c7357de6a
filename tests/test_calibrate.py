"""benchmarks/calibrate.py on CPU: it recovers known gemm parameters from a synthetic results.jsonl (the
format benchmarks/gpu_validate.py writes) and from a synthetic published-figures file, reports the
residuals and end-to-end rows, and writes a fragment the GPU database accepts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from godprof.analytic import efficiency as E
from godprof.gpus import load_gpu

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("calibrate", ROOT / "benchmarks" / "calibrate.py")
cal = importlib.util.module_from_spec(_spec)
sys.modules["calibrate"] = cal
_spec.loader.exec_module(cal)

H100 = load_gpu("h100")
TRUE = (4.0e-6, 0.70, 100.0, 0.85)  # kernel fixed s, compute_max, m_half tokens, bandwidth


def _seconds(flops: float, nbytes: float, m: float, kernels: int = 1) -> float:
    p = cal.Point("x", flops, nbytes, m, kernels, H100.peak_flops("bf16"), H100.hbm_bandwidth_bytes_per_s, 1.0)
    return cal.model_s(TRUE, p)


def synthetic_results(path: Path, extra: list[dict] | None = None) -> Path:
    """A results.jsonl whose ceilings stage was timed by the model at TRUE on an H100."""
    gemv = {}
    for name, (n_in, n_out) in cal.GEMV_SHAPES.items():
        nbytes = 2 * n_in * n_out
        s = _seconds(nbytes, nbytes, 1)
        gemv[name] = {"seconds": s, "bandwidth_bytes_per_s": nbytes / s}
    layer = 2 * 4096 * (2 * 4096 + 2 * 1024 + 3 * 14336)
    s_layer = _seconds(layer, layer, 1, kernels=7)
    n = 8192
    gemm_s = _seconds(2 * n**3, 6 * n * n, n)
    ceilings = {"copy_bandwidth_bytes_per_s": 3.0e12, "gemv": gemv,
                "layer_gemv_graph": {"seconds": s_layer, "bandwidth_bytes_per_s": layer / s_layer},
                "gemm": {"n": n, "flops_per_s": 2 * n**3 / gemm_s}}  # fmt: skip
    recs = [
        {"stage": "env", "status": "ok", "seconds": 1, "result": {"name": "NVIDIA H100 80GB HBM3"}},
        {"stage": "ceilings", "status": "ok", "seconds": 9, "result": ceilings},
        {"stage": "sdpa", "status": "timeout after 60 s", "seconds": 60},
        *(extra or []),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_fit_recovers_parameters_from_gpu_validate_results(tmp_path: Path):
    res = cal.read_results(synthetic_results(tmp_path / "results.jsonl"))
    assert set(res) == {"env", "ceilings"}  # the timed-out stage is skipped
    g = cal.results_gpu(res, None)
    assert g.key == "h100-sxm"
    pts = cal.results_points(res, g)
    assert len(pts) == 6
    # one square GEMM cannot separate compute_max from m_half: hold m_half, fit the other three
    fixed_s, cmax, mh, bw = cal.fit(pts, {"m_half_tokens": TRUE[2]})
    assert fixed_s == pytest.approx(TRUE[0], rel=0.02)
    assert cmax == pytest.approx(TRUE[1], rel=0.02)
    assert bw == pytest.approx(TRUE[3], rel=0.02)
    assert mh == pytest.approx(TRUE[2])


def test_fit_recovers_all_four_from_published_figures(tmp_path: Path):
    peak = H100.peak_flops("bf16")
    rows = []
    for m, n, k in ((1, 4096, 4096), (8, 8192, 8192), (64, 4096, 7168), (256, 4096, 4096), (1024, 2048, 2048),
                    (4096, 4096, 4096), (16, 1024, 1024), (128, 14336, 4096)):  # fmt: skip
        flops = 2.0 * m * n * k
        rows.append([1, m, n, k, flops / _seconds(flops, 2 * (m * k + k * n + m * n), m)])
    doc = {"sets": [{"name": "synthetic", "gpu": "h100", "dtype": "bf16", "bytes_per_element": 2, "source": "t",
                     "points": rows}]}  # fmt: skip
    p = tmp_path / "published.yaml"
    p.write_text(yaml.safe_dump(doc))
    pts = cal.published_points(p)
    assert all(pt.peak_flops == peak for pt in pts)
    theta = cal.fit(pts)
    for got, want in zip(theta, TRUE, strict=True):
        assert got == pytest.approx(want, rel=0.03)
    assert max(abs(cal.model_s(theta, pt) / pt.seconds - 1) for pt in pts) < 0.01  # residuals


def test_main_writes_a_fragment_the_gpu_database_accepts(tmp_path: Path, capsys):
    meas = {"estimate": {"spec": {"name": "llama-3-8b"}},
            "config": {"batch": 1, "seq": 512, "dtype": "bf16", "decode_context": 513},
            "measured": {"ttft_s": 1e-4, "tpot_s": 0.02}}  # fmt: skip
    extra = [{"stage": "llama_b1", "status": "ok", "seconds": 30, "result": meas}]
    results = synthetic_results(tmp_path / "results.jsonl", extra)
    out, js = tmp_path / "fragment.yaml", tmp_path / "fit.json"
    rc = cal.main(["--results", str(results), "--fix", "m_half_tokens=100", "-o", str(out), "--json", str(js)])
    assert rc == 0
    frag = yaml.safe_load(out.read_text())["efficiency"]
    assert E.check(frag) == []  # pastes into a GPU file's efficiency: section as it is
    assert frag["gemm"]["kernel_fixed_us"] == pytest.approx(4.0, rel=0.02)
    assert "m_half_tokens held at 100" in frag["gemm"]["source"]
    doc = json.loads(js.read_text())
    assert len(doc["residuals"]) == 6
    e2e = {r["phase"]: r for r in doc["end_to_end"]}
    assert e2e["ttft"]["bound_beaten"] is True  # 0.1 ms for 512 tokens of an 8B model: impossible
    assert e2e["tpot"]["bound_beaten"] is False
    err = capsys.readouterr().err
    assert "residuals" in err and "BOUND BEATEN" in err


def test_main_refuses_unknown_device_and_empty_input(tmp_path: Path):
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps({"stage": "env", "status": "ok", "seconds": 1, "result": {"name": "Mystery GPU"}}) + "\n")
    with pytest.raises(SystemExit, match="not in the GPU database"):
        cal.main(["--results", str(p)])
    with pytest.raises(SystemExit, match="no ok 'ceilings' stage"):
        cal.main(["--results", str(p), "--gpu", "h100"])
