"""Every command renders at 80 columns and in a pipe without cutting a name or a number.

The commands run as a user runs them (`python -m godprof ... | cat`, COLUMNS=80): no line is wider than
80 cells, no ellipsis ("…" or "...") appears, and the names a table holds appear whole. Wide tables fold
(parts that repeat the label column) or stack; prose wraps between words, left-aligned.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from godprof.report.table import Table

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def piped(*args: str, columns: int = 80, code: int = 0, stderr: bool = True) -> str:
    """stdout (+ stderr) of `godprof ARGS` in a pipe, at COLUMNS=columns."""
    env = dict(os.environ, COLUMNS=str(columns), TERM="dumb")
    env.pop("FORCE_COLOR", None)
    # run outside the checkout, so `-m godprof` imports the installed package, as a user's shell does
    r = subprocess.run([sys.executable, "-m", "godprof", *args], capture_output=True, text=True, env=env,
                       timeout=120, cwd=tempfile.gettempdir())  # fmt: skip
    assert r.returncode == code, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout + (r.stderr if stderr else "")


def check(text: str, width: int = 80) -> None:
    assert "…" not in text and "..." not in text.replace("1k..1M", ""), text
    wide = [line for line in text.splitlines() if cell_len(line) > width]
    assert not wide, "\n".join(wide)


COMMANDS = [
    (["estimate", "llama-3-8b"], ["8,030,261,248"]),
    (["estimate", "gpt-oss-120b", "--gpu", "h100"], ["gpt-oss-120b", "mxfp4"]),
    (["estimate", "deepseek-v3", "--dtype", "bf16,int4", "--gpu", "h100,b200"], ["h100-sxm", "b200"]),
    (
        ["compare", "llama-3-70b", "mixtral-8x22b", "mamba-2.8b", "mamba2-2.7b", "jamba-v0.1"],
        ["llama-3-70b", "mixtral-8x22b", "mamba-2.8b", "mamba2-2.7b", "jamba-v0.1", "does not fit"],
    ),
    (["compare", "llama-3-8b", "mamba-2.8b", "--gpu", "h100,b200", "--dtype", "bf16,int4"], ["b200 int4"]),
    (
        ["sweep", "deepseek-v3", "deepseek-v3.2-exp", "qwen3-next-80b-a3b", "--points", "4"],
        ["deepseek-v3.2-exp", "qwen3-next-80b-a3b", "1,048,576"],
    ),
    (
        ["plan", "llama-3-8b", "--gpu", "h100,a100-80gb,mi300x", "--concurrency", "64", "--slo-tpot", "50ms"],
        ["a100-80gb", "mi300x"],
    ),
    (
        ["plan", "llama-3-70b", "--train", "--tokens", "chinchilla", "--zero", "3", "--cluster-gpus", "2048"],
        ["Young/Daly"],
    ),
    (["plan", str(EX / "swarm.yaml"), "--against", "llama-3-70b"], ["qwen2.5-7b", "mistral-7b", "h100-sxm"]),
    (["specs"], ["qwen3-next-80b-a3b", "kimi-linear-48b-a3b", "deepseek-v3.2-exp"]),
    (["gpus"], ["infinity-fabric", "rtx-4090"]),
    (["gpus", "h100"], ["NVIDIA H100 SXM5 80GB"]),
    (["validate", *sorted(str(p) for p in (ROOT / "specs").glob("*.yaml"))[:12]], ["ok: "]),
    (["measure", "--help"], ["--device"]),
    (["plan", "--help"], ["--embed-plot"]),
    (["estimate", "--help"], ["Ki/Mi/Gi/Ti"]),
]


@pytest.mark.parametrize("args, names", COMMANDS, ids=[" ".join(a[:2]) for a, _ in COMMANDS])
def test_commands_render_whole_at_80_columns_in_a_pipe(args, names):
    out = piped(*args)
    check(out, width=10**6 if args[0] == "validate" else 80)  # validate: one unbroken line per result, for grep
    for name in names:
        assert name in out, name


def test_plan_that_does_not_fit_wraps_its_reasons():
    out = piped("plan", "llama-3.1-405b", "--gpu", "h100", "--max-gpus", "8", code=3, stderr=False)
    check(out)  # the tables; the error on stderr is one unbroken line, like every error
    assert "Does not fit" in out and "24.1 GiB short per GPU" in out.replace("\n", " ")


def test_validate_lines_never_break_mid_phrase(tmp_path):
    """One line per problem even at 40 columns, so grep sees each whole."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfamily: dense\nmodel: {vocab_size: 10, hidden_size: 8, num_layer: 2}\n")
    out = piped("validate", "llama-3-8b", str(bad), columns=40, code=2)
    lines = out.splitlines()
    assert any(line.startswith("ok: llama-3-8b: llama-3-8b (dense), 32 layers") for line in lines)
    assert f"error: {bad}:3: model.num_layer: unknown key 'num_layer'; did you mean 'num_layers'?" in lines


def test_formats_stay_complete(tmp_path):
    md = piped("compare", "mamba-2.8b", "mamba2-2.7b", "-f", "md")
    assert "| mamba-2.8b | mamba2-2.7b |" in md.replace("|  |", "|")
    csv_text = piped("compare", "mamba-2.8b", "mamba2-2.7b", "-f", "csv")
    assert len(csv_text.strip().splitlines()) == 3 and "mamba2-2.7b" in csv_text


def render(t: Table, width: int) -> str:
    c = Console(width=width, record=True, color_system=None, file=open(os.devnull, "w"))  # noqa: SIM115
    for part in t.renderables(width):
        c.print(part)
    return c.export_text()


def test_table_folds_then_stacks_and_prose_wraps():
    t = Table(
        "a title that is long enough to wrap " * 4, ["quantity"] + [f"model-{i}-with-a-long-name" for i in range(6)]
    )
    t.add("params", *(f"{i},234,567,890" for i in range(6)))
    t.caption = "a caption " * 30
    folded = render(t, 80)
    check(folded)
    assert folded.count("(part ") >= 2 and all(f"model-{i}-with-a-long-name" in folded for i in range(6))
    assert all(f"{i},234,567,890" in folded for i in range(6))
    stacked = render(t, 30)  # too narrow for the label and one column: rows become `column: value` lines
    check(stacked, 30)
    assert "model-5-with-a-long-name:" in stacked and "5,234,567,890" in stacked
    risks = Table("Risks", ["#", "risk"], prose={1})
    risks.add(1, "word " * 40 + "end")
    wrapped = render(risks, 50)
    check(wrapped, 50)
    assert "end" in wrapped and "│ 1 │ word" in wrapped  # left-aligned prose, wrapped inside its column
