"""Every `--format json` output is an object with a `schema` key and validates against the JSON Schema shipped
for it (godprof/schemas); one name per concept (`params.total`, `params.active`, `spec.name`) across commands."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from godprof.cli.main import app
from godprof.schemas import SCHEMA_FILES, schema_for

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
runner = CliRunner()


def run_json(*args: str, code: int = 0) -> dict:
    r = runner.invoke(app, [*args, "--format", "json"])
    assert r.exit_code == code, (args, r.output)
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict) and isinstance(doc.get("schema"), str), args
    jsonschema.validate(doc, schema_for(doc["schema"]))
    return doc


def test_every_shipped_schema_is_a_valid_schema_document():
    files = {p.name for p in resources.files("godprof.schemas").iterdir() if p.name.endswith(".json")}
    assert files == set(SCHEMA_FILES.values())
    for name in SCHEMA_FILES:
        s = schema_for(name)
        jsonschema.Draft202012Validator.check_schema(s)
        assert s["$schema"].endswith("2020-12/schema")


@pytest.mark.parametrize(
    "args, schema",
    [
        (["estimate", "llama-3-8b"], "godprof.estimate/1"),
        (["estimate", "jamba-v0.1", "--mode", "train", "--gpu", "h100"], "godprof.estimate/1"),
        (["estimate", "mixtral-8x7b", "--dtype", "bf16,int4", "--gpu", "h100,b200"], "godprof.estimates/1"),
        (["compare", "llama-3-8b", "mamba-2.8b"], "godprof.compare/2"),
        (["compare", "llama-3-8b", "jamba-v0.1", "--gpu", "h100,l4", "--dtype", "bf16,fp8"], "godprof.compare/2"),
        (["sweep", "llama-3-8b", "mamba-2.8b", "--points", "3", "--gpu", "h100,h200"], "godprof.sweep/2"),
        (["gpus"], "godprof.gpus/1"),
        (["gpus", "mi300x"], "godprof.gpus/1"),
        (["specs", "--family", "moe"], "godprof.specs/1"),
        (["plan", "llama-3-8b", "--concurrency", "8"], "godprof.plan.serve/2"),
        (["plan", "llama-3-8b", "--train", "--tokens", "1T", "--cluster-gpus", "64"], "godprof.plan.train/2"),
    ],
)
def test_command_json_validates_against_its_schema(args, schema):
    doc = run_json(*args)
    assert doc["schema"] == schema


def test_names_agree_across_commands():
    """params.total / params.active and spec.name mean the same thing in estimate, compare, plan and specs."""
    est = run_json("estimate", "mixtral-8x7b")
    cmp = run_json("compare", "mixtral-8x7b")["records"][0]
    plan = run_json("plan", "mixtral-8x7b", "--gpu", "h100")
    train = run_json("plan", "mixtral-8x7b", "--train", "--tokens", "1T", "--cluster-gpus", "64")
    cat = {s["name"]: s for s in run_json("specs")["specs"]}["mixtral-8x7b"]
    want = {"total": 46_702_792_704, "active": 12_879_925_248}
    for d in (est, cmp, plan, train, cat):
        assert {k: d["params"][k] for k in ("total", "active")} == want
    for d in (est, cmp, plan, train):
        assert d["spec"]["name"] == "mixtral-8x7b" and d["spec"]["family"] == "moe"


def test_plan_layout_is_always_present_with_a_meaning():
    fits = run_json("plan", "llama-3-8b")
    assert fits["fits"] and set(fits["layout"]) >= {"tp", "pp", "ep", "replicas"}
    short = run_json("plan", "llama-3.1-405b", "--max-gpus", "2", code=3)
    assert short["fits"] is False and short["layout"] is None and short["missing"]
    swarm = run_json("plan", str(EXAMPLES / "swarm.yaml"), "--against", "llama-3-70b")
    assert swarm["schema"] == "godprof.plan.swarm/2" and swarm["layout"] is None
    for m in swarm["members"]:
        assert m["spec"]["name"] == m["plan"]["spec"]["name"]
        assert m["plan"]["layout"] is not None and m["plan"]["params"]["total"] > 0
    assert swarm["against"]["spec"]["name"] == "llama-3-70b"


def test_validate_json_lists_results_and_problems(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfamily: dense\nmodel: {vocab_size: 10, hidden_size: 8, num_layer: 2}\n")
    doc = run_json("validate", "llama-3-8B", str(bad), code=2)
    assert (doc["valid"], doc["invalid"]) == (1, 1)
    good, wrong = doc["results"]
    assert good["ok"] and good["spec"]["name"] == "llama-3-8b" and good["params"]["total"] == 8_030_261_248
    assert not wrong["ok"] and any(p["key_path"] == "model.num_layer" and p["line"] == 3 for p in wrong["problems"])


def test_a_schema_rejects_the_old_names():
    """The schemas are not vacuous: the pre-contract shapes fail them."""
    doc = run_json("compare", "llama-3-8b")
    rec = doc["records"][0]
    old = dict(rec, params=rec["params"]["total"], params_active=rec["params"]["active"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(doc, records=[old]), schema_for("godprof.compare/2"))
    with pytest.raises(jsonschema.ValidationError):  # a bare list, as gpus -f json used to print
        jsonschema.validate([g for g in run_json("gpus")["gpus"]], schema_for("godprof.gpus/1"))
    plan = run_json("plan", "llama-3-8b")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(plan, spec="llama-3-8b"), schema_for("godprof.plan.serve/2"))


def test_measure_json_validates_against_its_schema():
    pytest.importorskip("torch")
    doc = run_json(
        "measure", str(EXAMPLES / "tiny-dense.yaml"), "--device", "cpu", "--seq", "16", "--new-tokens", "2",
        "--iters", "2", "--warmup", "1", "--no-fvcore",
    )  # fmt: skip
    assert doc["schema"] == "godprof.measure/2"
    assert doc["measured"]["params"]["total"] == doc["estimate"]["params"]["total"]
    assert 0 < doc["roofline"]["decode_bytes"]
