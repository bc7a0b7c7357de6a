"""Memory per GPU of a training layout: model state under ZeRO with tensor, pipeline and expert
parallelism, and activations with dropout and (partial) recomputation.

Model state (mixed precision, Rajbhandari et al. 2020 "ZeRO: Memory Optimizations Toward Training
Trillion Parameter Models", sec. 3.1): 16-bit weights (2 B/param), gradients in ``grad_dtype`` (fp32 by
default: 4 B/param, as DeepSpeed's bf16 mode and Megatron-LM's ``--accumulate-allreduce-grads-in-fp32``
accumulate them; bf16: 2 B, the ZeRO paper's 2 + 2 + 12 = 16 B/param with Adam), optimizer state
(``memory.optimizer_bytes``: AdamW's fp32 master + m + v = 12 B/param). With fp32 gradients Adam costs
2 + 4 + 12 = 18 B/param.

Parallelism (``plan.layout.Layout``): a replica is tp x pp GPUs; ``replicas`` is the data-parallel
degree dp. Expert parallelism is independent of tp: routed experts are placed whole,
ceil(experts / ep) per GPU, over ep GPUs of the tp x dp GPUs of a pipeline stage (DeepSeek-V3: PP16 x
EP64 x DP128 on 2,048 GPUs, tp 1); every other parameter is split tp ways and replicated dp ways. ZeRO
shards what is replicated: dense state over dp, expert state over the expert-data-parallel degree
edp = tp x dp / ep (Megatron-Core's expert data parallelism). Stage 1 shards optimizer state, 2 also
gradients, 3 also weights (plus two layers' gathered weights in flight).

ZeRO-Offload (Ren et al. 2021, "ZeRO-Offload: Democratizing Billion-Scale Model Training"): with
``offload_optimizer`` the optimizer state (fp32 master, m, v) lives in CPU memory and the CPU runs the
update: it leaves the GPU total and is reported as ``cpu_optimizer_bytes`` per GPU (host memory the
GPU's share needs). The gradients stay on the GPU as the ZeRO stage keeps them (DeepSpeed copies them to
the host in buckets; counting them whole is conservative).

Activations: ``memory.train_activation_bytes``'s per-layer saved tensors (Korthikanti et al. 2022,
"Reducing Activation Recomputation in Large Transformer Models"), divided by tp (sequence parallelism);
under 1F1B the first stage holds about one micro-batch through all layers (sec. 4.2.3).
- dropout > 0 adds the masks Korthikanti's 34sbh + 5as^2b counts: one byte per element of the two
  residual-branch dropouts per layer (2 x tokens x hidden) and of the embedding dropout (tokens x
  hidden), and, without flash attention and without selective recomputation, the attention-probability
  mask (heads x seq bytes per token; flash attention regenerates it from the RNG seed);
- ``recompute_layers`` N (Megatron-LM's ``--recompute-granularity full --recompute-method block
  --recompute-num-layers N``): the first N layers of each pipeline stage keep only their input and are
  recomputed in backward; the other layers follow ``recompute`` (none or selective). One recomputed
  layer's full set is alive while it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from godprof.analytic import memory as M
from godprof.analytic.params import ParamCounts
from godprof.plan.layout import Layout, max_layer_params, stage_layers, stage_shares
from godprof.spec import Spec

if TYPE_CHECKING:
    from godprof.plan.training import TrainCandidate, TrainConfig

GRAD_BYTES = {"fp32": 4, "bf16": 2}


def recomputed_layers(num_layers: int, pp: int, n: int | None) -> set[int]:
    """Indices of the layers fully recomputed: the first ``n`` of each pipeline stage (all with n=None
    and ``recompute full``, handled by the caller)."""
    if not n:
        return set()
    return {i for rng in stage_layers(num_layers, pp) for i in list(rng)[:n]}


def activation_bytes(spec: Spec, cfg: TrainConfig, pp: int) -> int:
    """Activations held for backward over one micro-batch through all layers (before the tp split):
    ``memory.train_activation_bytes`` with partial recomputation and dropout masks (module docstring)."""
    w = cfg.workload()
    base = M.train_activation_bytes(spec, w)
    layers = spec.layers()
    t = w.batch * w.seq
    h = spec.model.hidden_size
    a = w.act_dtype.bits // 8
    full = recomputed_layers(len(layers), pp, cfg.recompute_layers) if cfg.recompute != "full" else set()
    out = base
    if full:
        saved = [M._layer_train_elements(spec, lay, w.seq, w) for lay in layers]
        for i in full:
            el, fp32 = saved[i]
            out -= t * (el * a + fp32) - t * h * a  # keeps only its input
        out += max(t * (saved[i][0] * a + saved[i][1]) for i in full)  # one layer recomputed at a time
    if cfg.dropout > 0:
        kept = [i for i in range(len(layers)) if i not in full] if cfg.recompute != "full" else []
        masks = t * h + 2 * t * h * len(kept)
        if not w.flash_attention and cfg.recompute == "none":
            masks += sum(t * getattr(layers[i].mixer, "num_heads", 0) * w.seq for i in kept)
        out += masks
    return out


def ep_for(spec: Spec, tp: int, dp: int, fixed: int | None) -> int | None:
    """Expert-parallel degree of a (tp, dp) layout: ``fixed`` when it divides tp x dp and the experts
    (None when it cannot), else the largest power of two dividing both (the least expert memory per GPU;
    all-to-all cost is not in the MFU). 1 without routed experts."""
    experts = [r[0] for f in spec.ffns.values() if f is not None and (r := f.routed_experts(spec.model.hidden_size))]
    if not experts:
        return 1 if fixed in (None, 1) else None
    e = max(experts)
    if fixed is not None:
        return fixed if (tp * dp) % fixed == 0 and fixed <= e else None
    ep = 1
    while (tp * dp) % (ep * 2) == 0 and ep * 2 <= e and e % (ep * 2) == 0:
        ep *= 2
    return ep


def train_memory_per_gpu(spec: Spec, counts: ParamCounts, cfg: TrainConfig, layout: Layout) -> dict[str, Any]:
    """Bytes on the busiest GPU (heaviest pipeline stage) for a layout whose ``replicas`` is the
    data-parallel degree: weights, gradients, optimizer state, activations, ZeRO-3 gather buffer, total
    (on the GPU), and the optimizer state kept in CPU memory with ``offload_optimizer``."""
    w = cfg.workload()
    act_dt = w.act_dtype  # fp8 training keeps 16-bit master weights (Transformer Engine); int formats train in bf16
    weights_total = M.weights_bytes(counts, act_dt)
    shares = stage_shares(spec, counts, weights_total, act_dt, layout)
    heavy = max(shares, key=lambda s: s.params)
    dp = layout.replicas
    edp = max(1, layout.tp * dp // max(1, layout.ep))  # expert data-parallel degree
    expert = heavy.expert_params
    dense = heavy.params - expert
    bpp = act_dt.bits / 8
    opt_per_param = M.optimizer_bytes(counts, w) / counts.total

    def sharded(stage: int) -> float:
        """Parameters of this GPU's state after ZeRO shards it at ``stage`` and above."""
        return dense / dp + expert / edp if cfg.zero >= stage else dense + expert

    weights = sharded(3) * bpp
    grads = sharded(2) * GRAD_BYTES[cfg.grad_dtype]
    opt = sharded(1) * opt_per_param
    gather = 2 * max_layer_params(spec) * bpp / layout.tp if (cfg.zero >= 3 and dp > 1) else 0
    acts = activation_bytes(spec, cfg, layout.pp) / layout.tp
    out: dict[str, Any] = {
        "weights_bytes": int(weights),
        "gradients_bytes": int(grads),
        "optimizer_bytes": 0 if cfg.offload_optimizer else int(opt),
        "activations_bytes": int(acts),
        "zero3_gather_bytes": int(gather),
    }
    out["total_bytes"] = sum(out.values())
    out["cpu_optimizer_bytes"] = int(opt) if cfg.offload_optimizer else 0
    return out


def usable_bytes(gpu: Any, cfg: TrainConfig, peers: bool) -> int:
    """Memory per GPU the training state may use: memory x (1 - headroom) less the runtime overheads
    (``analytic.inference_memory``: CUDA context, workspaces, and NCCL buffers when it has peers)."""
    from godprof.analytic.inference_memory import MemoryModel
    from godprof.analytic.inference_memory import usable_bytes as usable

    return usable(gpu, MemoryModel(headroom=cfg.headroom), peers)


def why_not_fits(
    spec: Spec, gpu: Any, cfg: TrainConfig, cands: list[TrainCandidate], n: int | None, max_dp: int
) -> str:
    """One line: what is missing when no layout fits (``plan.missing``)."""
    tight = min(cands, key=lambda c: c.memory["total_bytes"], default=None)
    where = f"on --cluster-gpus {cfg.cluster_gpus}" if cfg.cluster_gpus else (
        f"within --max-gpus {cfg.max_gpus}" if cfg.max_gpus else "in the search")  # fmt: skip
    if tight is None:
        if cfg.cluster_gpus:
            return (f"no layout {where}: tp x pp must divide {cfg.cluster_gpus} and data parallelism is capped at "
                    f"{max_dp} by the global batch of {cfg.global_batch_tokens:,} tokens")  # fmt: skip
        return f"no tensor-parallel degree up to {cfg.gpus_per_node} splits {spec.name}'s heads"
    if tight.fits:  # fits somewhere, but not on exactly n GPUs
        return (f"no layout fits exactly {n} GPUs (model-parallel size must divide it, and data parallelism is "
                f"capped at {max_dp} by the global batch of {cfg.global_batch_tokens:,} tokens)")  # fmt: skip
    usable = usable_bytes(gpu, cfg, tight.layout.gpus > 1)
    short = tight.memory["total_bytes"] - usable
    lay = tight.layout
    msg = (
        f"memory: the best layout {where} ({lay.label()}, dp {lay.replicas}, ZeRO-{cfg.zero}) needs "
        f"{tight.memory['total_bytes'] / 2**30:.1f} GiB per GPU, {short / 2**30:.1f} GiB more than the "
        f"{usable / 2**30:.1f} GiB usable on {gpu.name}"
    )
    biggest = max(("activations_bytes", "weights_bytes", "gradients_bytes", "optimizer_bytes"),
                  key=lambda k: tight.memory[k])  # fmt: skip
    if biggest == "activations_bytes" and cfg.recompute != "full":
        msg += "; activations are the largest part: try --recompute full, --recompute-layers N or a shorter --seq"
    elif biggest != "activations_bytes" and cfg.zero < 3:
        msg += f"; model state is the largest part: try --zero {cfg.zero + 1}, --offload-optimizer or more GPUs"
    return msg
