"""PyTorch build of a spec (imports torch; the analytic layer never does).

    from godprof.build import build_model
    model = build_model(spec, device="cuda", dtype=torch.bfloat16)   # parameters made on the device
    cache = model.allocate_cache(batch, max_len)                       # static, preallocated
    logits = model(input_ids, cache=cache)                             # prefill; then S = 1 per decode step

The model holds exactly the tensors ``godprof.analytic.count_params`` counts and its cache exactly the
bytes ``memory.kv_cache_bytes + memory.ssm_state_bytes`` computes.
"""

from godprof.build.cache import Cache
from godprof.build.model import Model, build_model

__all__ = ["Cache", "Model", "build_model"]
