"""Offline import of Hugging Face ``config.json`` files into godprof specs.

No network, ever: the user has the file. ``spec_from_hf_config`` reads the keys that
``transformers`` reads for each supported ``model_type``, with the same defaults when a key is
absent, and writes a spec *document* (the dict a YAML spec would hold). The Spec itself is built by
``godprof.spec.parse_spec`` on that document, so validation lives in one place, and
``spec_yaml`` writes the same document as YAML (``godprof import``) that round-trips through
``load_spec`` to the same counts.

Each family of model_types is one adapter module (``godprof.hf.llama``, ``.moe``, ``.deepseek``,
``.gpt``, ``.ssm``...) whose docstring says what it reads and where each quirk comes from in
transformers' modelling code; ``MODEL_TYPES`` in each maps a model_type to its converter.

Wrappers whose ``text_config`` holds a supported text model (Mistral-3, Gemma-3, Llama-4 multimodal
checkpoints) import the text model only: vision towers and projectors are not counted, and the
description says so.

Left out: rope scaling (no parameters).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from godprof.errors import Problem, SpecError
from godprof.hf import (
    deepseek,
    deepseek_v4,
    dense,
    falcon_h1,
    glm,
    gpt,
    gpt_oss,
    hybrid,
    kimi_linear,
    lfm2,
    llama,
    llama4,
    minimax,
    moe,
    moe_more,
    qwen3_next,
    rwkv,
    ssm,
    zamba2,
)  # fmt: skip
from godprof.hf.common import layout as _layout
from godprof.hf.config import Config, read_json_document
from godprof.spec import Spec, parse_spec

# One adapter module per model_type family; each maps its model_types to a converter. Adding a family:
# write its module (see godprof/hf/llama.py) and add it here.
FAMILY_MODULES = (
    llama, moe, deepseek, deepseek_v4, gpt, ssm, dense, gpt_oss, llama4, glm, moe_more,  # attention and MoE decoders
    hybrid, qwen3_next, kimi_linear, lfm2, minimax, rwkv, falcon_h1, zamba2,  # hybrids with SSM or linear-time mixers
)  # fmt: skip
CONVERTERS: dict[str, Callable[[Config], dict[str, Any]]] = {
    t: f for mod in FAMILY_MODULES for t, f in mod.MODEL_TYPES.items()
}
SUPPORTED_MODEL_TYPES = tuple(sorted(CONVERTERS))
__all__ = [
    "SUPPORTED_MODEL_TYPES", "read_config_file", "spec_document_from_hf_config", "spec_from_config_file",
    "spec_from_hf_config", "spec_yaml", "_layout",
]  # fmt: skip


# --------------------------------------------------------------------------- public API


def _model_type(cfg: dict[str, Any]) -> str | None:
    """The config's ``model_type`` when it is a string (anything else is reported as unsupported)."""
    t = cfg.get("model_type")
    return t if isinstance(t, str) else None


def _text_model(cfg: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A wrapper's text model: (its config, the wrapper's model_type), or (cfg, None) for a text model.
    A wrapper is a config whose own model_type is not supported and whose ``text_config`` is."""
    text = cfg.get("text_config")
    if _model_type(cfg) in CONVERTERS or not isinstance(text, dict):
        return cfg, None
    if _model_type(text) not in CONVERTERS:
        return cfg, None
    inner = dict(text)
    for key in ("tie_word_embeddings",):  # wrappers may state it at the top level only
        if key not in inner and key in cfg:
            inner[key] = cfg[key]
    return inner, str(cfg.get("model_type"))


def spec_document_from_hf_config(cfg: Any, source: str, name: str | None = None) -> dict[str, Any]:
    """The spec document (what a YAML spec would hold) for a parsed config.json mapping."""
    if not isinstance(cfg, dict):
        raise SpecError(source, [Problem("", f"expected a JSON object at the top level, got {type(cfg).__name__}")])
    outer = cfg
    cfg, wrapper = _text_model(cfg)
    c = Config(cfg, source, "text_config." if wrapper else "")
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if "model_type" not in cfg:
        c.bad("model_type", f"missing; a Hugging Face config.json names its model_type (supported: {supported})")
    model_type = cfg["model_type"]
    if not isinstance(model_type, str) or model_type not in CONVERTERS:
        near = difflib.get_close_matches(str(model_type), SUPPORTED_MODEL_TYPES, n=1, cutoff=0.0)
        hint = f"; the nearest supported is {near[0]!r}" if near else ""
        c.bad("model_type", f"unsupported model_type {model_type!r}{hint} (supported: {supported})")
    try:
        body = CONVERTERS[model_type](c)
    except (TypeError, AttributeError) as e:
        # a converter met a JSON value of a type it does not check (a list where it compares numbers...): the
        # file is at fault, and gets one line rather than a traceback (the converter should name the key)
        raise SpecError(source, [Problem("", f"a {model_type} key holds a value of an unexpected type "
                                             f"({type(e).__name__}: {str(e)[:100]})")]) from None  # fmt: skip
    doc: dict[str, Any] = {"name": name or _default_name(outer, source), "family": body.pop("family")}
    doc["source"] = source
    what = f"model_type {model_type}"
    if wrapper is not None:
        what = f"model_type {wrapper}; its text_config ({model_type}) only: vision and other towers are not counted"
    doc["description"] = f"{body.pop('description')}. Imported from a Hugging Face config.json ({what})."
    doc.update(body)
    qc = outer.get("quantization_config", cfg.get("quantization_config"))
    if qc is not None:
        try:
            weights, note = weights_from_quantization_config(qc, cfg, _present_components(doc, source))
        except (TypeError, ValueError, AttributeError, OverflowError) as e:  # a value of a type it does not check
            why = f"holds a value of an unexpected type ({type(e).__name__}: {str(e)[:100]})"
            raise SpecError(source, [Problem("quantization_config", why)]) from None
        if weights is not None:
            doc["weights"] = weights
        if note:
            doc["description"] += f" {note}"
    return doc


def spec_from_hf_config(cfg: dict[str, Any], source: str) -> Spec:
    """A validated Spec from a parsed config.json mapping (``source`` names it in errors)."""
    return parse_spec(spec_document_from_hf_config(cfg, source), source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a config.json; a bad file raises a SpecError with the file and line (``read_json_document``:
    unreadable, binary, not UTF-8, over the size or nesting bounds, a duplicate key, invalid JSON)."""
    data, _ = read_json_document(path)
    if not isinstance(data, dict):
        raise SpecError(str(path), [Problem("", f"expected a JSON object at the top level, got {type(data).__name__}")])
    return data


def spec_from_config_file(path: str | Path) -> Spec:
    """Load a Hugging Face config.json from disk (never from the network) as a Spec."""
    return spec_from_hf_config(read_config_file(path), str(path))


def _default_name(cfg: dict[str, Any], source: str) -> str:
    p = Path(source)
    if p.stem and p.stem != "config":
        return p.stem
    if p.parent.name:
        return p.parent.name
    nm = cfg.get("_name_or_path")
    if isinstance(nm, str) and nm.strip("./"):
        return nm.rstrip("/").split("/")[-1]
    return str(cfg.get("model_type", "imported"))


def spec_yaml(doc: dict[str, Any]) -> str:
    """Write a spec document as YAML in the bundled specs' style (one flow mapping per mixer/ffn)."""
    import yaml

    out = [f"# Generated by `godprof import` from {doc.get('source')}; edit freely."]
    for key in ("name", "family", "source", "description"):
        if key in doc:
            out.append(yaml.safe_dump({key: doc[key]}, sort_keys=False, width=1000).rstrip())
    if "published" in doc:
        out.append(yaml.safe_dump({"published": doc["published"]}, sort_keys=False).rstrip())
    out.append(yaml.safe_dump({"model": doc["model"]}, sort_keys=False).rstrip())
    for section in ("mixers", "ffns"):
        if section in doc:
            out.append(f"{section}:")
            for k, v in doc[section].items():
                flow = yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=1000).strip()
                out.append(f"  {k}: {flow}")
    if "layout" in doc:
        out.append("layout:")
        for k, v in doc["layout"].items():
            flow = yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=1000).strip()
            out.append(f"  {k}: {flow}")
    for key in ("mtp", "weights"):
        if key in doc:
            flow = yaml.safe_dump(doc[key], default_flow_style=True, sort_keys=False, width=1000).strip()
            out.append(f"{key}: {flow}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- quantization_config -> weights
#
# A checkpoint's config.json says how its weights are stored in ``quantization_config``; godprof keeps that
# as the spec's ``weights`` section (the format each parameter component ships in, see
# ``godprof.dtypes.WeightFormats``). Read:
#   quant_method mxfp4 (gpt-oss; transformers' Mxfp4Config): transformers converts only the MoE experts
#     (``replace_with_mxfp4_linear`` swaps GptOssMLP's experts), skipping ``modules_to_not_convert``.
#   quant_method fp8 (DeepSeek-V3/R1/V3.2, Qwen3 FP8; transformers' FineGrainedFP8Config): every Linear of
#     the layers but ``modules_to_not_convert``; ``weight_block_size: [128, 128]`` is ``fp8_block``, none
#     is per-tensor ``fp8``.
#   quant_method modelopt (NVIDIA TensorRT Model Optimizer checkpoints such as nvidia/DeepSeek-R1-FP4,
#     nvidia/Llama-3.1-8B-Instruct-FP4): ``quant_algo`` NVFP4 (``group_size`` 16) or FP8 (per tensor), every
#     Linear of the layers but ``exclude_modules``.
#   quant_method compressed-tensors (llm-compressor): ``config_groups`` whose weights are nvfp4
#     (``nvfp4-pack-quantized``: 4-bit float, group 16), fp8 blocks of 128 x 128 or fp8 per tensor, on the
#     Linear layers their ``targets`` name, but ``ignore``.
#   quant_method nvfp4 (transformers' NVFP4Config): every Linear but ``modules_to_not_convert``.
# Skip lists are matched as transformers' ``should_convert_module`` does (a prefix at a module boundary,
# a regex, or a suffix), globs (``*``) and compressed-tensors' ``re:`` regexes included. Routers, embeddings
# and lm_head stay in 16 bits: no shipped format above quantises them (DeepSeek's gate is not a Linear,
# Model Optimizer disables ``*router*`` / ``*mlp.gate.*`` and lm_head quantizers, and the configs list them).
# Other methods (gptq, awq, bitsandbytes...) are named in the description and counted in bf16.

_LINEAR_COMPONENTS = ("attention", "mlp", "routed_experts", "shared_experts", "ssm", "mtp")

# HF module names (after a layer prefix) standing for each component: one tuple per projection, holding its
# spellings across families (Llama/DeepSeek ``mlp``, Mixtral ``block_sparse_moe``, gpt-oss's fused experts,
# Qwen2-MoE ``shared_expert``, Mamba ``mixer``, Jamba ``mamba``). A projection is left unquantised in a layer
# when a skip pattern matches one of its spellings.
_LAYER_MODULES: dict[str, tuple[tuple[str, ...], ...]] = {
    "attention": (("self_attn.q_proj", "self_attn.q_a_proj"), ("self_attn.o_proj",)),
    "mlp": (("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",)),
    "routed_experts": (
        ("mlp.experts.gate_up_proj", "mlp.experts.0.gate_proj", "block_sparse_moe.experts.0.w1"),
        ("mlp.experts.down_proj", "mlp.experts.0.down_proj", "block_sparse_moe.experts.0.w2"),
    ),
    "shared_experts": (
        ("mlp.shared_experts.gate_proj", "mlp.shared_expert.gate_proj"),
        ("mlp.shared_experts.down_proj", "mlp.shared_expert.down_proj"),
    ),
    "ssm": (("mixer.in_proj", "mamba.in_proj"), ("mixer.out_proj", "mamba.out_proj")),
}
_LAYER_PREFIXES = ("model.layers.{i}.", "model.language_model.layers.{i}.", "backbone.layers.{i}.")


def _pattern_matches(pattern: str, name: str) -> bool:
    """Whether a skip/target pattern names module ``name`` (or a module above it)."""
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    if pattern.startswith("re:"):
        regexes = [pattern[3:]]
    else:
        regexes = [re.escape(pattern).replace(r"\*", ".*"), pattern]  # as a glob, and raw as transformers does
    for rx in regexes:
        try:
            if re.match(rf"(?:{rx}){boundary}", name):
                return True
        except re.error:
            continue
    return not pattern.startswith("re:") and name.endswith(pattern)


def _covered_fraction(component: str, layers: Iterable[int], skip: list[str], targets: list[str] | None) -> float:
    """Fraction of the component's projections (over ``layers``) the quantisation reaches."""
    comps = list(_LAYER_MODULES) if component == "mtp" else [component]  # an MTP module is a whole block
    groups = [g for c in comps for g in _LAYER_MODULES[c]]
    hit = total = 0
    for i in layers:
        for spellings in groups:
            names = [pre.format(i=i) + s for pre in _LAYER_PREFIXES for s in spellings]
            total += 1
            skipped = any(_pattern_matches(p, n) for p in skip for n in names)
            targeted = targets is None or any(_pattern_matches(p, n) for p in targets for n in names)
            hit += targeted and not skipped
    return hit / total if total else 0.0


def _compressed_tensors_format(qc: dict[str, Any]) -> tuple[str | None, list[str] | None, str]:
    """(format, target patterns or None for every Linear, what it is) of a compressed-tensors config."""
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return None, None, "compressed-tensors without config_groups"
    formats: set[str | None] = set()
    targets: list[str] = []
    every_linear = False
    for g in groups.values():
        w = g.get("weights") if isinstance(g, dict) else None
        if not isinstance(w, dict):
            continue
        bits, typ, strategy = w.get("num_bits"), w.get("type"), w.get("strategy")
        if qc.get("format") == "nvfp4-pack-quantized" or (bits == 4 and typ == "float" and w.get("group_size") == 16):
            formats.add("nvfp4")
        elif bits == 8 and typ == "float" and strategy == "block" and w.get("block_structure") in ([128, 128],):
            formats.add("fp8_block")
        elif bits == 8 and typ == "float" and strategy == "tensor":
            formats.add("fp8")
        else:
            formats.add(None)
        for t in g.get("targets") or []:
            if t == "Linear":
                every_linear = True
            else:
                targets.append(str(t))
    what = f"compressed-tensors {qc.get('format', '')}".strip()
    if len(formats) != 1 or None in formats:
        return None, None, what
    return formats.pop(), None if every_linear else targets, what


def weights_from_quantization_config(
    qc: Any, cfg: dict[str, Any], present: set[str] | None = None
) -> tuple[dict[str, str] | None, str]:
    """The spec's ``weights`` section for a config.json's ``quantization_config``, and a sentence for the
    description saying what was read. (None, why) when the method or scheme is not modelled: the weights
    are then counted in bf16, as without a quantization_config. ``cfg`` is the text model's config (its
    layer count); ``present`` the components the spec has parameters in (None: keep every one)."""
    if not isinstance(qc, dict):
        return None, "Its quantization_config is not a mapping: weights are counted in bf16."
    method = str(qc.get("quant_method", "")).lower()
    skip = [str(p) for key in ("modules_to_not_convert", "ignored_layers", "exclude_modules", "ignore")
            for p in (qc.get(key) or [])]  # fmt: skip
    targets: list[str] | None = None
    components: tuple[str, ...] = _LINEAR_COMPONENTS
    fmt: str | None = None
    what = method
    if method == "mxfp4":
        fmt, components = "mxfp4", ("routed_experts",)
    elif method == "fp8":
        block = qc.get("weight_block_size")
        fmt = "fp8" if block is None else "fp8_block" if block == [128, 128] else None
        shape = "x".join(map(str, block)) if isinstance(block, list) else repr(block)
        what = "fp8" if block is None else f"fp8, {shape} blocks"
    elif method in ("modelopt", "modelopt_fp4"):
        algo = str(qc.get("quant_algo", "")).upper()
        what = f"modelopt {algo}"
        if algo == "NVFP4" and qc.get("group_size", 16) == 16:
            fmt = "nvfp4"
        elif algo == "FP8":
            fmt = "fp8"
    elif method == "nvfp4":
        fmt = "nvfp4"
    elif method == "compressed-tensors":
        fmt, targets, what = _compressed_tensors_format(qc)
    if fmt is None:
        return None, (f"Its quantization_config ({what or 'no quant_method'}) is not modelled: weights are "
                      f"counted in bf16; give --dtype to choose a format.")  # fmt: skip
    layers = int(cfg.get("num_hidden_layers") or cfg.get("num_layers") or cfg.get("n_layer") or 0)
    mtp_layers = int(cfg.get("num_nextn_predict_layers") or 0)
    weights: dict[str, str] = {"default": "bf16"}
    partly: list[str] = []
    for comp in components:
        if present is not None and comp not in present:
            continue
        span = range(layers, layers + max(mtp_layers, 1)) if comp == "mtp" else range(layers)
        share = _covered_fraction(comp, span, skip, targets)
        if share >= 0.5:
            weights[comp] = fmt
        if 0 < share < 1:
            partly.append(f"{comp} {share:.0%} in {fmt}, counted in {weights.get(comp, 'bf16')}")
    quantised = [c for c in weights if c != "default"]
    if not quantised:
        return None, f"Its quantization_config ({what}) quantises none of this model's weights: counted in bf16."
    note = f"Weights as shipped (quantization_config: {what}): {', '.join(quantised)} in {fmt}, the rest in bf16"
    if partly:
        note += f" (the skip list leaves part of some in bf16: {'; '.join(partly)})"
    return weights, note + "."


def _present_components(doc: dict[str, Any], source: str) -> set[str] | None:
    """The components a spec document has parameters in (None when the document does not parse: the
    parse that follows reports why)."""
    from godprof.analytic.params import count_params

    try:
        counts = count_params(parse_spec(doc, source), include_mtp=True)
    except SpecError:
        return None
    return {c for c, n in counts.by_component.items() if n}
