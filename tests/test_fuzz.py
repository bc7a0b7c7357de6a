"""Property-based fuzzing of every input godprof reads: the CLI's contract on hostile and careless input.

Contract (issue 12): every input gets either a valid result (exit 0 with output; exit 3 when a plan or a
measurement does not fit) or error lines (exit 2, each ``error: ...`` naming the input), never a
traceback and never a hang. Inputs that are known to be invalid (NaN, infinity, a boolean or a
fractional number where a size belongs, a number where a boolean belongs, a duplicate key, a size past
its bound, ``null`` for a required size) must not be accepted.

Mutations start from every bundled spec (specs/*.yaml), every example (examples/*.yaml) and every
config.json fixture (tests/fixtures/hf/*.json): a value anywhere in the document is replaced by a
hostile one, a key is duplicated or removed, or the text is damaged (truncated, made binary, non-UTF-8,
an alias bomb, deep nesting, oversized). Options of every command get hostile values. The CLI runs
in-process (typer's CliRunner), with a wall-clock alarm per case.

``GODPROF_FUZZ_EXAMPLES`` raises the example budget (CI keeps the default); ``run_campaign`` is the
counting campaign behind /work/notes/fuzz-counts.md (``python tests/test_fuzz.py N``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "hf").glob("*.json"))
GPU_FILES = sorted((ROOT / "godprof" / "data" / "gpus").glob("*.yaml"))
CASE_LIMIT_S = 20.0  # a case that runs longer is a hang (the slowest valid case takes well under 2 s)

# Keys whose value is a size every spec or config needs: null or a non-integer there is an error.
REQUIRED_SIZES = {
    "vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "num_experts", "top_k",
    "num_hidden_layers", "num_attention_heads", "n_embd", "n_layer", "n_head", "d_model", "prompt_tokens",
    "output_tokens",
}  # fmt: skip
# Keys that hold a quantity which may be fractional even where a bundled file writes a whole number.
FRACTIONAL = {
    "memory_gib", "hbm_bandwidth_gb_per_s", "tdp_w", "interconnect_gb_per_s", "fp32", "tf32", "bf16", "fp16",
    "fp8", "fp6", "fp4", "int8", "int4", "rope_theta", "share", "rate", "tolerance", "expand", "ttft", "tpot",
    "embedding_multiplier", "logit_scale", "routed_scaling_factor", "price_usd_per_hour",
}  # fmt: skip


@dataclass
class Case:
    """One fuzz case: the files it writes, the CLI arguments, and whether the input is known invalid."""

    args: list[str]
    files: dict[str, bytes]
    invalid: bool
    what: str


# --------------------------------------------------------------------------- mutations of documents


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


def _get(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _set(node: Any, path: tuple, value: Any) -> None:
    _get(node, path[:-1])[path[-1]] = value


def _hostile_value(
    rng: random.Random, old: Any, key: Any, strict: bool = True, top_level: bool = True
) -> tuple[Any, bool]:
    """(new value, known invalid) for a value ``old`` under ``key``. Not ``strict`` (config.json, whose
    unread keys may hold anything): only required sizes at the top level are known invalid."""
    new, invalid = _hostile_choice(rng, old, key)
    return new, invalid and (strict or key in REQUIRED_SIZES and top_level)


def _hostile_choice(rng: random.Random, old: Any, key: Any) -> tuple[Any, bool]:
    is_int = isinstance(old, int) and not isinstance(old, bool) and key not in FRACTIONAL
    is_num = is_int or (isinstance(old, int | float) and not isinstance(old, bool))
    size = is_int and key in REQUIRED_SIZES
    choices: list[tuple[Any, bool]] = [
        (None, size),
        (float("nan"), is_num),
        (float("inf"), is_num),
        (float("-inf"), is_num),
        (-1, is_num and key not in ("offset",)),
        (0, False),
        (10**30, is_int),
        (1e30, is_int),
        (10**7, False),
        (True, is_num),
        (False, is_num),
        ("abc", is_num),
        ([1, [2, [3]]], is_num),
        ({"a": {"b": 1}}, is_num),
        ("", False),
    ]
    if is_int:
        choices += [(old + 0.5, True), (float(old), True), (old * 1000, False), (str(old), True)]
    if isinstance(old, bool):
        choices += [(1, True), ("yes", True), (0.0, True)]
    if isinstance(old, str):
        choices += [(old + "x", False), (old.upper(), False), ("\x00", False), ("é" * 3, False)]
    if isinstance(old, list):
        choices += [(old * 3, False), ([], False), (old[:1], False)]
    return rng.choice(choices)


def mutate_document(rng: random.Random, data: Any, strict: bool = True) -> tuple[Any, bool, str, list[str]]:
    """(mutated document, known invalid, description, extra text lines to append)."""
    paths = [p for p in _paths(data) if p]
    path = rng.choice(paths)
    key = next((p for p in reversed(path) if isinstance(p, str)), None)
    op = rng.random()
    if op < 0.12 and isinstance(path[-1], str):
        del _get(data, path[:-1])[path[-1]]
        return data, False, f"delete {path}", []
    if op < 0.18 and isinstance(_get(data, path[:-1]), dict):
        _get(data, path[:-1])["no_such_key"] = 1
        return data, strict, f"unknown key under {path[:-1]}", []
    old = _get(data, path)
    new, invalid = _hostile_value(rng, old, key, strict, len(path) == 1)
    _set(data, path, new)
    return data, invalid, f"{path}: {old!r} -> {new!r}", []


def _yaml_text(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2)


def text_damage(rng: random.Random, text: str, kind: str) -> tuple[bytes, bool, str]:
    """(bytes, known invalid, description) of a damaged document (``kind``: yaml or json)."""
    raw = text.encode()
    op = rng.randrange(10)
    if op == 0:
        cut = rng.randrange(1, max(2, len(raw)))
        return raw[:cut], False, f"truncated at {cut}"
    if op == 1:
        return b"\xff\xfe" + raw[:50] + b"\x80\x81", True, "not UTF-8"
    if op == 2:
        return raw[:40] + b"\x00\x00\x01\x02" + raw[40:], True, "binary (NUL bytes)"
    if op == 3:
        if kind == "json":
            depth = rng.choice([200, 5000, 100000])
            return ("[" * depth + "]" * depth).encode(), True, f"JSON nested {depth} deep"
        depth = rng.choice([200, 5000, 100000])
        return (f"name: x\nmodel: {'[' * depth}{']' * depth}\n").encode(), True, f"YAML nested {depth} deep"
    if op == 4 and kind == "yaml":
        bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]
        for i in range(1, 10):
            prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
            bomb.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
        return (text + "\n" + "\n".join(bomb) + "\n").encode(), True, "alias bomb"
    if op == 5:
        lines = text.splitlines()
        top = [ln for ln in lines if ln and not ln.startswith((" ", "#", "-", "{", "}", "[", "]"))]
        if kind == "yaml" and top:
            return (text + "\n" + rng.choice(top) + "\n").encode(), True, "duplicate top-level key"
        if kind == "json" and text.startswith("{"):
            body = text.strip()[1:-1].strip()
            first = body.split("\n")[0].rstrip(",")
            if first:
                return ("{\n  " + first + ",\n" + body + "\n}").encode(), True, "duplicate JSON key"
        return raw, False, "unchanged"
    if op == 6:
        return raw + b"\n#" + b"x" * (20 << 20), True, "20 MiB file"
    if op == 7:
        return b"", True, "empty file"
    if op == 8:
        return b"- just\n- a list\n" if kind == "yaml" else b"[1, 2]", True, "top level not a mapping"
    return raw.replace(b":", b"", 1), False, "one colon removed"


# --------------------------------------------------------------------------- cases


def spec_case(rng: random.Random, tmp: str) -> Case:
    src = rng.choice([*SPECS, *EXAMPLES, *FIXTURES])
    kind = "json" if src.suffix == ".json" else "yaml"
    text = src.read_text(encoding="utf-8")
    data = json.loads(text) if kind == "json" else yaml.safe_load(text)
    name = f"{tmp}/in.{kind if kind == 'json' else 'yaml'}"
    if rng.random() < 0.25:
        raw, invalid, what = text_damage(rng, text, kind)
    else:
        data, invalid, what, _ = mutate_document(rng, data, strict=kind == "yaml")
        raw = (_json_text(data) if kind == "json" else _yaml_text(data)).encode()
    if src.parent.name == "examples" and src.stem.startswith(("workload", "swarm")):
        if "swarm" in src.stem:
            args = ["plan", name, "--gpu", "h100", "-f", "json"]
        else:
            args = ["plan", "llama-3-8b", "--workload", name, "--gpu", "h100", "-f", "json"]
    else:
        args = rng.choice([
            ["estimate", name, "-f", "json"],
            ["validate", name],
            ["estimate", name, "--seq", "512", "--mode", "train"],
            ["compare", name, "llama-3-8b", "-f", "json"],
            ["sweep", name, "--context", "1k..64k", "--points", "3", "-f", "json"],
            ["plan", name, "--gpu", "h100", "-f", "json"],
            ["import", name, "-o", f"{tmp}/out.yaml"] if kind == "json" else ["validate", name],
        ])  # fmt: skip
    return Case(args, {name: raw}, invalid, f"{src.name}: {what}")


def gpu_case(rng: random.Random, tmp: str) -> Case:
    src = rng.choice(GPU_FILES)
    text = src.read_text(encoding="utf-8")
    name = f"{tmp}/mygpu.yaml"
    if rng.random() < 0.25:
        raw, invalid, what = text_damage(rng, text, "yaml")
    else:
        data, invalid, what, _ = mutate_document(rng, yaml.safe_load(text))
        raw = _yaml_text(data).encode()
    cmd = rng.choice([["compare", "llama-3-8b"], ["plan", "llama-3-8b"], ["gpus"]])
    args = [*cmd, "--gpu-file", name, *(["mygpu"] if cmd == ["gpus"] else ["--gpu", "mygpu", "-f", "json"])]
    return Case(args, {name: raw}, invalid, f"gpu {src.name}: {what}")


HOSTILE_OPTION_VALUES: list[tuple[str, bool]] = [
    ("1e300", True), ("nan", True), ("inf", True), ("-inf", True), ("-1", True), ("0", True), ("1e7", False),
    ("abc", True), ("", True), ("8k", False), ("1" + "0" * 400, True), ("0.5", True), ("2.5k", False),
    ("1..", True), ("..", True), ("1k..1", True), ("1e-300", True), ("10000000", False), ("1,2", True),
]  # fmt: skip

# command -> (base arguments, options that take a value)
OPTIONS: dict[str, tuple[list[str], list[str]]] = {
    "estimate": (
        ["estimate", "llama-3-8b"],
        ["--batch", "--seq", "--context", "--dtype", "--kv-dtype", "--group-size", "--mode", "--format", "--optimizer"],
    ),
    "compare": (
        ["compare", "llama-3-8b", "mamba-2.8b"],
        ["--batch", "--context", "--dtype", "--kv-dtype", "--compute-eff", "--bandwidth-eff", "--gpu"],
    ),
    "sweep": (
        ["sweep", "llama-3-8b", "--no-text-plot"],
        ["--points", "--context", "--batch", "--gpu", "--compute-eff", "--dtype"],
    ),
    "plan": (
        ["plan", "llama-3-8b"],
        ["--prompt-tokens", "--output-tokens", "--concurrency", "--rate", "--samples-per-prompt", "--slo-ttft",
         "--slo-tpot", "--max-gpus", "--gpus-per-node", "--headroom", "--usd-per-gpu-hour", "--idle-power-fraction",
         "--tp", "--pp", "--gpu", "--dtype", "--output", "--workload"],
    ),
    "plan-train": (
        ["plan", "llama-3-8b", "--train"],
        ["--tokens", "--mfu", "--zero", "--seq", "--micro-batch", "--tp", "--pp", "--global-batch-tokens",
         "--failure-rate-per-gpu-hour", "--checkpoint-write-s", "--cluster-gpus"],
    ),
    "measure": (
        ["measure", "examples/tiny-dense.yaml", "--device", "cpu", "--iters", "1", "--warmup", "0", "--seq", "16",
         "--new-tokens", "2", "--no-fvcore"],
        ["--batch", "--seq", "--new-tokens", "--dtype", "--threads"],
    ),
}  # fmt: skip
FRACTIONAL_OPTIONS = {
    "--rate", "--mfu", "--headroom", "--usd-per-gpu-hour", "--compute-eff", "--bandwidth-eff",
    "--failure-rate-per-gpu-hour", "--checkpoint-write-s", "--idle-power-fraction", "--slo-ttft", "--slo-tpot",
}  # fmt: skip


def _known_options() -> dict[str, list[str]]:
    """The value-taking options each command really has (so the fuzz follows CLI changes)."""
    from godprof.cli.main import full_app

    app = full_app()
    import typer.main

    group = typer.main.get_command(app)
    out: dict[str, list[str]] = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        out[name] = [o for p in cmd.params if not getattr(p, "is_flag", False) and p.param_type_name == "option"
                     for o in p.opts if o.startswith("--")]  # fmt: skip
    return out


def option_case(rng: random.Random, tmp: str) -> Case:
    key = rng.choice(sorted(OPTIONS))
    base, opts = OPTIONS[key]
    opt = rng.choice(opts)
    value, invalid = rng.choice(HOSTILE_OPTION_VALUES)
    if opt in ("--dtype", "--kv-dtype", "--gpu", "--mode", "--format", "--optimizer"):
        invalid = value != ""  # no number names a dtype, GPU or mode; empty means the default
    if opt == "--context" and key == "sweep" and value in ("1e7", "10000000", "8k", "2.5k"):
        invalid = False
    if opt in FRACTIONAL_OPTIONS and value in ("0.5", "1e-300", "1e300"):
        invalid = False  # fractions are fine there, and any finite number
    zero_ok = ("--headroom", "--idle-power-fraction", "--failure-rate-per-gpu-hour", "--zero", "--usd-per-gpu-hour")
    if opt in zero_ok and value == "0":
        invalid = False
    if key == "measure" and value in ("1e7", "10000000", "8k", "2.5k") and opt in ("--batch", "--seq", "--new-tokens"):
        value = "1e300"  # no huge-but-valid measurement on a CPU in a test
    if opt == "--output":
        value, invalid = rng.choice([(f"{tmp}/ok.json", False), (f"{tmp}/missing/out.json", True), (tmp, True),
                                     (f"{tmp}/in.yaml", True)])  # fmt: skip
        base = [*base, "-f", "json"]
    args = [*base, opt, value]
    if key == "plan-train" and opt != "--tokens":
        args += ["--tokens", "1T"]
    if opt != "--output" and rng.random() < 0.1:
        target = rng.choice([f"{tmp}/missing/dir/out.json", tmp, "/proc/version", f"{tmp}/ok.json"])
        if key.startswith("plan") or key == "import":
            args += ["-f", "json", "-o", target]
            invalid = invalid or not target.endswith("ok.json")
    return Case(args, {}, invalid, f"{key} {opt}={value!r}")


def any_case(rng: random.Random, tmp: str) -> Case:
    r = rng.random()
    if r < 0.6:
        return spec_case(rng, tmp)
    if r < 0.75:
        return gpu_case(rng, tmp)
    return option_case(rng, tmp)


# --------------------------------------------------------------------------- running a case


class _Hang(BaseException):  # not caught by `except Exception` in the code under test
    pass


def _alarm(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise _Hang()


@dataclass
class Outcome:
    kind: str  # ok | error | error_lines (several error lines) | no_fit | traceback | hang | silent_accept | bad_error
    detail: str
    seconds: float


def run_case(case: Case, tmp: str, limit_s: float = CASE_LIMIT_S) -> Outcome:
    from typer.testing import CliRunner

    from godprof.cli.main import full_app

    for name, raw in case.files.items():
        Path(name).write_bytes(raw)
    out = Path(f"{tmp}/ok.json")
    if out.exists():
        out.unlink()
    old = signal.signal(signal.SIGALRM, _alarm)
    # measure's first case imports torch and builds a model: slow on a loaded CPU, not a hang
    signal.setitimer(signal.ITIMER_REAL, limit_s * (4 if case.args[0] == "measure" else 1))
    t0 = time.perf_counter()
    try:
        result = CliRunner().invoke(full_app(), case.args, catch_exceptions=True)
    except _Hang:
        return Outcome("hang", " ".join(case.args), time.perf_counter() - t0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    dt = time.perf_counter() - t0
    exc = result.exception
    if isinstance(exc, _Hang):
        return Outcome("hang", " ".join(case.args), dt)
    if exc is not None and not isinstance(exc, SystemExit):
        return Outcome("traceback", f"{type(exc).__name__}: {str(exc)[:200]}", dt)
    code = result.exit_code
    stderr = result.stderr
    if code == 0:
        if not (result.stdout.strip() or out.exists() or Path(f"{tmp}/out.yaml").exists()):
            return Outcome("bad_error", "exit 0 without output", dt)
        return Outcome("silent_accept" if case.invalid else "ok", case.what, dt)
    if code == 3:
        return Outcome("no_fit" if not case.invalid else "silent_accept", stderr.strip()[:200], dt)
    lines = [ln for ln in result.output.splitlines() if ln.strip() and not ln.startswith("ok:")]
    if code == 2 and lines and all(ln.startswith(("error:", "Usage:", "Try ", "╭", "│", "╰")) for ln in lines):
        if "Traceback" in result.output:
            return Outcome("traceback", result.output[-300:], dt)
        n_errors = sum(ln.startswith("error:") for ln in lines)
        return Outcome("error" if n_errors <= 1 else "error_lines", lines[0][:200], dt)
    return Outcome("bad_error", f"exit {code}: {(stderr or result.stdout)[-300:]!r}", dt)


# --------------------------------------------------------------------------- the CI property

EXAMPLES_BUDGET = int(os.environ.get("GODPROF_FUZZ_EXAMPLES", "400"))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fuzz"))


def test_fuzz_options_cover_every_command() -> None:
    """The option table names real options (a renamed option would silently stop being fuzzed)."""
    known = _known_options()
    for key, (base, opts) in OPTIONS.items():
        missing = [o for o in opts if o not in known[base[0]]]
        assert not missing, f"{key}: {missing} are not options of `godprof {base[0]}`"


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    st = None


if st is not None:

    @settings(max_examples=EXAMPLES_BUDGET, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
    @given(st.randoms(use_true_random=False))
    def test_fuzz_contract(fuzz_dir: str, rng: random.Random) -> None:
        case = any_case(rng, fuzz_dir)
        outcome = run_case(case, fuzz_dir)
        assert outcome.kind in ("ok", "error", "error_lines", "no_fit"), f"{case.what} {case.args}: {outcome}"


# --------------------------------------------------------------------------- the counting campaign


def run_campaign(n: int, seed: int = 12) -> Counter[str]:
    """Run ``n`` random cases and count outcomes (printed with one example of each failing class)."""
    import tempfile

    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    shown: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            case = any_case(rng, tmp)
            o = run_case(case, tmp, limit_s=10.0)
            counts[o.kind] += 1
            if (i + 1) % 250 == 0:
                print(json.dumps({"after": i + 1, **dict(sorted(counts.items()))}), flush=True)
            if o.kind not in ("ok", "error", "no_fit") and shown[o.kind + o.detail[:30]] < (o.kind != "error_lines"):
                shown[o.kind + o.detail[:30]] += 1
                print(f"[{i}] {o.kind}: {case.what} | {' '.join(case.args)[:120]} | {o.detail[:200]}", flush=True)
    return counts


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    c = run_campaign(total, int(sys.argv[2]) if len(sys.argv) > 2 else 12)
    print(json.dumps({"cases": total, **dict(sorted(c.items()))}))
