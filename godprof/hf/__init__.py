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
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from godprof.errors import Problem, SpecError
from godprof.hf import deepseek, gpt, llama, moe, ssm
from godprof.hf.common import layout as _layout
from godprof.hf.config import Config
from godprof.spec import Spec, parse_spec

# One adapter module per model_type family; each maps its model_types to a converter. Adding a family:
# write its module (see godprof/hf/llama.py) and add it here.
FAMILY_MODULES = (llama, moe, deepseek, gpt, ssm)
CONVERTERS: dict[str, Callable[[Config], dict[str, Any]]] = {
    t: f for mod in FAMILY_MODULES for t, f in mod.MODEL_TYPES.items()
}
SUPPORTED_MODEL_TYPES = tuple(sorted(CONVERTERS))
__all__ = [
    "SUPPORTED_MODEL_TYPES", "read_config_file", "spec_document_from_hf_config", "spec_from_config_file",
    "spec_from_hf_config", "spec_yaml", "_layout",
]  # fmt: skip


# --------------------------------------------------------------------------- public API


def _text_model(cfg: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A wrapper's text model: (its config, the wrapper's model_type), or (cfg, None) for a text model.
    A wrapper is a config whose own model_type is not supported and whose ``text_config`` is."""
    text = cfg.get("text_config")
    if cfg.get("model_type") in CONVERTERS or not isinstance(text, dict):
        return cfg, None
    if text.get("model_type") not in CONVERTERS:
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
    if model_type not in CONVERTERS:
        near = difflib.get_close_matches(str(model_type), SUPPORTED_MODEL_TYPES, n=1, cutoff=0.0)
        hint = f"; the nearest supported is {near[0]!r}" if near else ""
        c.bad("model_type", f"unsupported model_type {model_type!r}{hint} (supported: {supported})")
    body = CONVERTERS[model_type](c)
    doc: dict[str, Any] = {"name": name or _default_name(outer, source), "family": body.pop("family")}
    doc["source"] = source
    what = f"model_type {model_type}"
    if wrapper is not None:
        what = f"model_type {wrapper}; its text_config ({model_type}) only: vision and other towers are not counted"
    doc["description"] = f"{body.pop('description')}. Imported from a Hugging Face config.json ({what})."
    doc.update(body)
    return doc


def spec_from_hf_config(cfg: dict[str, Any], source: str) -> Spec:
    """A validated Spec from a parsed config.json mapping (``source`` names it in errors)."""
    return parse_spec(spec_document_from_hf_config(cfg, source), source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a config.json; bad JSON raises a SpecError with the file and line."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SpecError(str(p), [Problem("", f"invalid JSON: {e.msg}", e.lineno)]) from None
    except UnicodeDecodeError:
        raise SpecError(str(p), [Problem("", "not a UTF-8 text file")]) from None
    if not isinstance(data, dict):
        raise SpecError(str(p), [Problem("", f"expected a JSON object at the top level, got {type(data).__name__}")])
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
    return "\n".join(out) + "\n"
