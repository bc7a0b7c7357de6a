"""The analytic prefill activation peak against the exact live-tensor peak of the built model on CPU.

Each tiny example is built on CPU and prefilled the way ``godprof measure`` does it (a static cache
of seq + 4 tokens, last-position logits, an fp32 copy of them for sampling) under the measure layer's
``LiveTensorBytes`` tracker, which records the peak of live tensor bytes exactly. The estimate is
``memory.inference_activation_bytes`` for the same workload (``flash_attention`` as the CPU kernels
run: MLA's unequal head dims fall back to the math kernel). Every case must be within 2%; today every
one agrees to the byte.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from godprof.analytic import Workload
from godprof.analytic.memory import inference_activation_bytes
from godprof.build import build_model
from godprof.kinds.mamba1 import SCAN_ELEMENTS, scan_chunk
from godprof.measure.memory import LiveTensorBytes, fused_attention
from godprof.spec import load_spec, parse_spec_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = sorted(p.stem for p in EXAMPLES.glob("tiny-*.yaml"))
TOLERANCE = 0.02
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


def measured_and_estimated(spec, batch: int, seq: int, dtype: str) -> tuple[int, int]:
    model = build_model(spec, device="cpu", dtype=DTYPES[dtype])
    cache = model.allocate_cache(batch, seq + 4)
    ids = torch.randint(0, spec.model.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), LiveTensorBytes() as live:
        logits = model(ids, cache=cache, last_only=True)
        logits[:, -1].float().argmax(-1)
    w = Workload(batch=batch, seq=seq, context=seq + 4, dtype=dtype, logits="last",
                 flash_attention=fused_attention(spec, "cpu"))  # fmt: skip
    return live.peak_bytes, inference_activation_bytes(spec, w)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", TINY)
def test_estimate_within_two_percent_of_measured_peak(name, dtype):
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    for batch in (1, 4):
        for seq in (64, 200):
            measured, estimated = measured_and_estimated(spec, batch, seq, dtype)
            err = (estimated - measured) / measured
            assert abs(err) <= TOLERANCE, (name, dtype, batch, seq, estimated, measured, f"{err:+.2%}")


def test_mla_on_cpu_runs_the_math_kernel():
    # the CPU flash kernel needs equal q/k and v head dims: tiny-mla has 16 + 8 vs 16
    mla = load_spec(EXAMPLES / "tiny-mla.yaml")
    assert not fused_attention(mla, "cpu") and fused_attention(mla, "cuda")
    assert fused_attention(load_spec(EXAMPLES / "tiny-dense.yaml"), "cpu")
    # and the seq x seq scores it materialises are most of the prefill peak at seq 200:
    # two fp32 1 x 4 heads x 200 x 200 tensors = 1,280,000 of 2,054,656 bytes
    measured, estimated = measured_and_estimated(mla, 1, 200, "fp32")
    assert measured == estimated == 2_054_656


def test_mamba1_scan_in_several_chunks():
    # d_inner 1024 x d_state 16 x batch 4 = 65,536 values per token: the 2^24 budget gives chunks of 256,
    # and with batch 8 of 128, so seq 200 runs in two chunks (the state is carried between them)
    spec = parse_spec_text(
        "name: m1\nfamily: ssm\nmodel: {vocab_size: 64, hidden_size: 512, num_layers: 1, tie_embeddings: true}\n"
        "mixers:\n  m: {type: mamba1, d_state: 16, d_conv: 4, expand: 2}\n"
    )
    assert SCAN_ELEMENTS == 1 << 24  # one rule, in the kind's module, sizes the build's chunks and the model's
    assert scan_chunk(8, 1024, 16) == 128
    assert scan_chunk(4, 1024, 16) == 256
    assert scan_chunk(1, 1 << 30, 1) == 1
    measured, estimated = measured_and_estimated(spec, 8, 200, "fp32")
    assert abs(estimated - measured) / measured <= TOLERANCE, (estimated, measured)
    assert measured > 3 * 4 * 8 * 128 * 1024 * 16  # beyond three fp32 chunk-sized temporaries


def test_ssd_with_a_partial_last_chunk():
    # seq 37 is not a multiple of tiny-ssm2's chunk of 8: the SSD pads to 40 token slots
    spec = load_spec(EXAMPLES / "tiny-ssm2.yaml")
    for batch, dtype in ((3, "bf16"), (1, "fp32")):
        measured, estimated = measured_and_estimated(spec, batch, 37, dtype)
        assert abs(estimated - measured) / measured <= TOLERANCE, (batch, dtype, estimated, measured)


def test_ssd_with_large_chunks():
    # chunk 128, one group: the [heads, L, Q] intra-chunk matrices set the peak (as at real chunk sizes),
    # not the chunk states that dominate tiny-ssm2's chunks of 8
    spec = parse_spec_text(
        "name: m2\nfamily: ssm\nmodel: {vocab_size: 64, hidden_size: 64, num_layers: 1, tie_embeddings: true}\n"
        "mixers:\n  m: {type: mamba2, d_state: 16, d_conv: 4, expand: 2, head_dim: 16, chunk_size: 128}\n"
    )
    for batch, seq, dtype in ((1, 200, "fp32"), (3, 200, "bf16")):
        measured, estimated = measured_and_estimated(spec, batch, seq, dtype)
        assert abs(estimated - measured) / measured <= TOLERANCE, (batch, seq, dtype, estimated, measured)
