"""Checks every layer kind's tests share: a tiny spec from YAML text, its fp32 build, cached decode
against a full forward (prefill, then pieces of several lengths, then token by token), and our parameter
names mapped to a transformers decoder's."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import yaml

from godprof.build import build_model
from godprof.spec import Spec, parse_spec


def hf_model(cfg: dict[str, Any], device: str = "meta") -> Any:
    """transformers' causal LM for a config.json-style dict (keys starting with '_' dropped), built on
    ``device`` (``meta``: shapes only, no weights) with its warnings silenced."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_cfg = AutoConfig.for_model(**clean)
        with torch.device(device):
            return AutoModelForCausalLM.from_config(hf_cfg)


def token_ids(vocab: int, batch: int, seq: int, seed: int = 7) -> torch.Tensor:
    """A fixed batch of random token ids."""
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def spec_from(text: str) -> Spec:
    return parse_spec(yaml.safe_load(text), "inline")


def tiny_model(spec: Spec, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The build with weights drawn wide enough (std 0.15) that logits differ clearly between tokens."""
    return build_model(spec, "cpu", dtype, init_std=0.15, seed=2)


@torch.no_grad()
def assert_cached_decode_matches(
    model: torch.nn.Module, pieces: Sequence[int], first: int, tol: float = 2e-5, vocab: int = 97
) -> None:
    """Logits through the cache, fed ``pieces`` tokens at a time and then one token at a time after a
    ``first``-token prompt, equal a full forward over the same tokens (fp32)."""
    total = sum(pieces)
    ids = torch.randint(0, vocab, (2, total), generator=torch.Generator().manual_seed(0))
    full = model(ids)
    cache = model.allocate_cache(2, total + 5)
    got, start = [], 0
    for n in pieces:
        got.append(model(ids[:, start : start + n], cache=cache))
        start += n
    torch.testing.assert_close(torch.cat(got, dim=1), full, atol=tol, rtol=tol)
    cache = model.allocate_cache(2, total + 5)
    steps = [model(ids[:, :first], cache=cache)] if first else []
    steps += [model(ids[:, i : i + 1], cache=cache) for i in range(first, total)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=tol, rtol=tol)


def hf_name(name: str, rules: Sequence[tuple[str, str]], fixed: dict[str, str] | None = None) -> str:
    """Our parameter name -> a transformers decoder's: the model-level tensors (``fixed`` overrides the
    Llama-style defaults), then per layer the first rule whose prefix matches, under ``model.layers.i``."""
    top = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "lm_head.weight": "lm_head.weight", **(fixed or {})}  # fmt: skip
    if name in top:
        return top[name]
    m = re.match(r"layers\.(\d+)\.(.*)", name)
    assert m, name
    i, rest = m.groups()
    for ours, theirs in rules:
        if rest.startswith(ours):
            return f"model.layers.{i}.{theirs}{rest[len(ours) :]}"
    raise AssertionError(name)


def prefill_peaks(model: torch.nn.Module, spec: Spec, batch: int, seq: int) -> tuple[int, int]:
    """(measured, estimated) prefill activation peak: the live tensor bytes of one cached prefill of
    batch x seq tokens on CPU with last-position logits and a sampler's fp32 copy, against
    ``memory.inference_activation_bytes`` for the same workload (fused attention where the CPU has it)."""
    from godprof.analytic import Workload
    from godprof.analytic.memory import inference_activation_bytes
    from godprof.measure.memory import LiveTensorBytes, fused_attention

    cache = model.allocate_cache(batch, seq + 4)
    ids = torch.randint(0, spec.model.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), LiveTensorBytes() as live:
        logits = model(ids, cache=cache, last_only=True)
        logits[:, -1].float().argmax(-1)
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[model.dtype]
    w = Workload(batch=batch, seq=seq, context=seq + 4, dtype=dtype, logits="last",
                 flash_attention=fused_attention(spec, "cpu"))  # fmt: skip
    return live.peak_bytes, inference_activation_bytes(spec, w)
