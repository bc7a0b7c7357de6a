"""The work behind ``godprof plan --train`` and a swarm file: option parsing and the planners' calls.

Kept apart from ``godprof.cli.plan`` (the command's options and flow) so that module stays readable.
"""

from __future__ import annotations


def parse_count(text: str, what: str) -> int:
    """A size or count option under the one rule (``godprof.report.format.SIZE_RULE``), the option named."""
    from godprof.report.format import parse_size

    try:
        n = parse_size(text)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    if n > 10**18:
        raise ValueError(f"{what}: {text!r} is over the bound of 1e18")
    return n


def train_plan(spec_ref, gpus, dtype, tokens, mfu, zero, recompute, optimizer, seq, micro_batch, global_batch_tokens,
               failure_rate, checkpoint_write_s, cluster_gpus, max_gpus, gpus_per_node, usd, headroom, idle, tp,
               pp, extra):  # fmt: skip
    from godprof.cli.common import load
    from godprof.plan.training import LLAMA3_FAILURES_PER_GPU_HOUR, TrainConfig, plan_training

    n_tokens = None if tokens.strip().lower() == "chinchilla" else parse_count(tokens, "--tokens")
    seq_len = parse_count(seq, "--seq")
    cfg = TrainConfig(
        tokens=n_tokens, seq=seq_len, micro_batch=micro_batch,
        global_batch_tokens=parse_count(global_batch_tokens, "--global-batch-tokens"), dtype=dtype,
        optimizer=optimizer, recompute=recompute, zero=zero, mfu=mfu,
        failure_rate_per_gpu_hour=LLAMA3_FAILURES_PER_GPU_HOUR if failure_rate is None else failure_rate,
        checkpoint_write_s=checkpoint_write_s or None, headroom=headroom, max_gpus=max_gpus,
        gpus_per_node=gpus_per_node, cluster_gpus=cluster_gpus, usd_per_gpu_hour=usd, idle_fraction=idle, tp=tp,
        pp=pp, **extra,
    )  # fmt: skip
    s = load(spec_ref)
    plans = [plan_training(s, g, cfg) for g in gpus]
    # cheapest first where every GPU has a price, else by energy (GPU-hours x TDP)
    priced = all(p.run.get("cost_usd") is not None for p in plans if p.fits)
    plans.sort(key=lambda p: (not p.fits, p.run["cost_usd"] if priced and p.fits else p.gpu_hours * p.gpu.tdp_w))
    best = plans[0]
    best.other_gpus = plans[1:]  # type: ignore[attr-defined]
    return best


def swarm_plan(swarm_file, gpus, wl, opts, against):
    from godprof.cli.common import load
    from godprof.plan.swarm import plan_swarm

    refs = {m.spec_ref for m in swarm_file.members} | ({swarm_file.router_ref} if swarm_file.router_ref else set())
    specs = {r: load(r) for r in sorted(refs)}
    return plan_swarm(swarm_file, specs, gpus, wl, opts, load(against) if against else None)


def parse_speculative(text: str):
    """``--speculative 'k=4,acceptance=0.7'`` (MTP modules) or ``'draft=SPEC,k=4,acceptance=0.7'``."""
    from godprof.plan.serving_types import Speculative

    fields: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("draft", "k", "acceptance", "a"):
            raise ValueError(f"--speculative: expected draft=SPEC, k=N and acceptance=A, got {part.strip()!r}")
        fields["acceptance" if key == "a" else key] = val.strip()
    try:
        k = int(fields.get("k", "4"))
        a = float(fields.get("acceptance", "0.7"))
    except ValueError:
        raise ValueError(f"--speculative: k must be an integer and acceptance a number, got {text!r}") from None
    return Speculative(k=k, acceptance=a, draft=fields.get("draft") or None)


def parse_disaggregate(text: str) -> tuple[int, int]:
    """``--disaggregate 'P:D'`` (prefill and decode instances per replica) or ``auto`` -> (0, 0)."""
    t = text.strip().lower()
    if t == "auto":
        return (0, 0)
    p, sep, d = t.partition(":")
    try:
        pools = (int(p), int(d)) if sep else None
    except ValueError:
        pools = None
    if pools is None or min(pools) < 1 or max(pools) > 1024:
        raise ValueError(f"--disaggregate: expected P:D instance counts from 1 to 1024 (1:3) or 'auto', got {text!r}")
    return pools


def serve_semantics(max_batch, concurrency_max, prefix_hit_rate, speculative, disaggregate, attn_dp, ep) -> dict:
    """The ``ServeOptions`` fields of the serving-semantics options (parsed; errors name the option)."""
    if not 0.0 <= prefix_hit_rate < 1.0:  # NaN fails too
        raise ValueError(f"--prefix-hit-rate: must be in [0, 1), got {prefix_hit_rate}")
    return dict(
        max_batch=max_batch, concurrency_max=concurrency_max, prefix_hit_rate=prefix_hit_rate,
        speculative=parse_speculative(speculative) if speculative else None,
        disaggregate=parse_disaggregate(disaggregate) if disaggregate else None, attn_dp=attn_dp, ep=ep,
    )  # fmt: skip
