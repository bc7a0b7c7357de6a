"""Every validation error path: the message names the key path and the line, and nothing else breaks."""

from __future__ import annotations

import pytest

from godprof.errors import NotFoundError, SpecError
from godprof.spec import load_spec, parse_spec_text

GOOD = """\
name: t
family: dense
model:
  vocab_size: 10
  hidden_size: 8
  num_layers: 2
mixers:
  attn: {type: attention, num_heads: 2}
ffns:
  mlp: {type: mlp, intermediate_size: 16}
"""


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec_text(text, "s.yaml")
    return [(p.key_path, p.line, p.message) for p in info.value.problems]


def test_good_spec_loads():
    s = parse_spec_text(GOOD, "s.yaml")
    assert s.layer_mixers == ("attn", "attn") and s.layer_ffns == ("mlp", "mlp")


@pytest.mark.parametrize(
    ("old", "new", "key", "line", "fragment"),
    [
        ("  hidden_size: 8", "  hiden_size: 8", "model.hiden_size", 5, "did you mean 'hidden_size'"),
        ("  hidden_size: 8", "  hiden_size: 8", "model", 3, "missing required key 'hidden_size'"),
        ("  num_layers: 2", "  num_layers: 0", "model.num_layers", 6, "must be positive"),
        ("  num_layers: 2", "  num_layers: two", "model.num_layers", 6, "expected an integer"),
        ("  num_layers: 2", "  num_layers: true", "model.num_layers", 6, "expected an integer"),
        ("num_heads: 2}", "num_heads: 3}", "mixers.attn.num_heads", 8, "not divisible by num_heads"),
        ("num_heads: 2}", "num_heads: 4, num_kv_heads: 3}", "mixers.attn.num_kv_heads", 8, "multiple of num_kv_heads"),
        ("num_heads: 2}", "num_heads: 2, rotary_dim: 3}", "mixers.attn.rotary_dim", 8, "even"),
        ("{type: attention", "{type: attn", "mixers.attn.type", 8, "unknown mixer type"),
        ("{type: mlp", "{type: dense", "ffns.mlp.type", 10, "unknown ffn type"),
        ("intermediate_size: 16}", "intermediate_size: 16, gated: yes please}", "ffns.mlp.gated", 10, "true or false"),
        (
            "intermediate_size: 16}",
            "intermediate_size: 16, activation: swish}",
            "ffns.mlp.activation",
            10,
            "must be one of",
        ),
        ("family: dense", "family: giant", "family", 2, "must be one of"),
        ("family: dense", "family: moe", "family", 2, "does not match the layers"),
        ("name: t", "name: t\nsize: 7", "size", 2, "unknown key"),
    ],
)
def test_each_error_names_key_and_line(old, new, key, line, fragment):
    found = problems(GOOD.replace(old, new))
    assert any(k == key and ln == line and fragment in msg for k, ln, msg in found), found


MOE = GOOD.replace("  mlp: {type: mlp, intermediate_size: 16}", "  moe: {type: moe, num_experts: 4, top_k: 2, "
                   "expert_intermediate_size: 8}").replace("family: dense", "family: moe")  # fmt: skip


def test_moe_errors():
    assert parse_spec_text(MOE, "m.yaml").has_moe
    found = problems(MOE.replace("top_k: 2", "top_k: 5"))
    assert ("ffns.moe.top_k", 10, "top_k (5) cannot exceed num_experts (4)") in found
    found = problems(MOE.replace("top_k: 2", "top_k: 2, shared_expert_gate: true"))
    assert any(k == "ffns.moe.shared_expert_gate" for k, _, _ in found)
    found = problems(MOE.replace("num_experts: 4", "num_experts: -4"))
    assert any(k == "ffns.moe.num_experts" and "positive" in m for k, _, m in found)


SSM = """\
name: s
family: ssm
model: {vocab_size: 10, hidden_size: 8, num_layers: 2}
mixers:
  m: {type: mamba2, d_state: 4, expand: 2, head_dim: 4}
"""


def test_ssm_errors():
    assert parse_spec_text(SSM, "s.yaml").layers()[0].ffn is None
    assert any("not divisible by head_dim" in m for _, _, m in problems(SSM.replace("head_dim: 4", "head_dim: 5")))
    assert any("n_groups" in k for k, _, _ in problems(SSM.replace("head_dim: 4", "head_dim: 4, n_groups: 3")))
    assert any("not an integer" in m for _, _, m in problems(SSM.replace("expand: 2", "expand: 1.3")))
    assert any(
        "either d_inner or expand" in m for _, _, m in problems(SSM.replace("expand: 2", "expand: 2, d_inner: 16"))
    )
    found = problems(SSM.replace("type: mamba2", "type: mamba1, dt_rank: 0"))
    assert any(k == "mixers.m.dt_rank" for k, _, _ in found)


HYBRID = """\
name: h
family: hybrid
model: {vocab_size: 10, hidden_size: 8, num_layers: 4}
mixers:
  attn: {type: attention, num_heads: 2}
  mamba: {type: mamba1}
ffns:
  mlp: {type: mlp, intermediate_size: 16}
layout:
  mixer: {default: mamba, every: {period: 2, offset: 1, use: attn}}
"""


def test_layout_patterns_and_errors():
    s = parse_spec_text(HYBRID, "h.yaml")
    assert s.layer_mixers == ("mamba", "attn", "mamba", "attn")
    s = parse_spec_text(HYBRID.replace("every: {period: 2, offset: 1, use: attn}",
                                       "layers: {indices: [0, 3], use: attn}"), "h.yaml")  # fmt: skip
    assert s.layer_mixers == ("attn", "mamba", "mamba", "attn")
    s = parse_spec_text(HYBRID.replace("every: {period: 2, offset: 1, use: attn}", "first: {count: 3, use: attn}"), "h")
    assert s.layer_mixers == ("attn", "attn", "attn", "mamba")
    s = parse_spec_text(HYBRID.replace("{default: mamba, every: {period: 2, offset: 1, use: attn}}",
                                       "[attn, mamba, mamba, mamba]"), "h")  # fmt: skip
    assert s.layer_mixers == ("attn", "mamba", "mamba", "mamba")

    def bad(new: str) -> list:
        return problems(HYBRID.replace("{default: mamba, every: {period: 2, offset: 1, use: attn}}", new))

    assert any("3 entries" in m and ln == 10 for _, ln, m in bad("[attn, mamba, mamba]"))
    assert any("'atn' is not defined; did you mean 'attn'" in m for _, _, m in bad("[atn, mamba, mamba, mamba]"))
    assert any(
        "offset (2) must be smaller" in m
        for _, _, m in bad("{default: mamba, every: {period: 2, offset: 2, use: attn}}")
    )
    assert any("out of range" in m for _, _, m in bad("{default: mamba, layers: {indices: [4], use: attn}}"))
    assert any("exceeds" in m for _, _, m in bad("{default: mamba, first: {count: 5, use: attn}}"))
    assert any("missing required key 'default'" in m for _, _, m in bad("{every: {period: 2, use: attn}}"))
    no_layout = HYBRID.split("layout:")[0]
    assert any("say which each layer uses" in m for _, _, m in problems(no_layout))


def test_learned_positions_need_a_maximum():
    found = problems(GOOD.replace("  num_layers: 2", "  num_layers: 2\n  position_embedding: learned"))
    assert any("max_position_embeddings" in m for _, _, m in found)


def test_invalid_yaml_and_non_mapping():
    ((key, line, msg),) = problems("name: [unclosed\nfamily: dense\n")
    assert "invalid YAML" in msg and line is not None
    assert problems("- just\n- a list\n")[0][2].startswith("expected a mapping")


def test_yaml_tags_that_construct_objects_are_refused():
    found = problems("!!python/object/apply:os.system ['true']\n")
    assert "invalid YAML" in found[0][2]


def test_unknown_spec_name_suggests_nearest():
    with pytest.raises(NotFoundError, match="did you mean llama-3-8b"):
        load_spec("llama-3-8")
    with pytest.raises(NotFoundError, match="no such file"):
        load_spec("missing/config.json")


def test_all_problems_reported_at_once_in_line_order():
    found = problems(
        GOOD.replace("  num_layers: 2", "  num_layers: -1").replace("num_heads: 2}", "num_heads: 2, foo: 1}")
    )
    assert [ln for _, ln, _ in found] == sorted(ln for _, ln, _ in found)
    assert len(found) >= 2
