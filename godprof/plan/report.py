"""Plan reports for the terminal: the tables of a serving, training or swarm plan.

Renderers return data (Tables); only the CLI prints. The Markdown / HTML documents are in
``godprof.plan.document``, the JSON contract in ``godprof.plan.contract``.
"""

from __future__ import annotations

from typing import Any

from godprof.plan.serving import Candidate, ServePlan
from godprof.plan.swarm import SwarmPlan, summarize_dense
from godprof.plan.training import TrainPlan
from godprof.report.format import fmt_bytes, fmt_flops, fmt_int, fmt_params, fmt_seconds
from godprof.report.table import Table

GIB = 1 << 30


def _usd(x: float | None) -> str:
    return "-" if x is None else (f"${x:,.2f}" if x >= 0.1 else f"${x:.4f}")


def _kwh(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3g} kWh" if x >= 1 else f"{x * 1000:.3g} Wh")


def _tps(x: float | None) -> str:
    return "-" if x is None else (f"{x:,.0f}" if x >= 10 else f"{x:.2g}")


def _per_million(kwh: float, usd: float | None) -> str:
    return _kwh(kwh) + ("" if usd is None else f" and {_usd(usd)}")


def _flops(x: float) -> str:
    """Large FLOP counts in scientific notation (6.19e23 FLOP), which is how training budgets are quoted."""
    return fmt_flops(x) if x < 1e18 else f"{x:.3g} FLOP".replace("e+", "e")


def _hours(h: float) -> str:
    if h >= 24 * 365:
        return f"{h / 24 / 365:.2f} years"
    if h >= 48:
        return f"{h / 24:.1f} days"
    return f"{h:.1f} h"


def _workload_line(p: ServePlan | SwarmPlan) -> str:
    wl = p.workload
    traffic = (
        f"{wl.rate_per_s:g} requests/s" if wl.rate_per_s is not None
        else "offline (--concurrency max)" if getattr(p.options, "concurrency_max", False)
        else f"{wl.concurrency or 1} concurrent requests"
    )  # fmt: skip
    parts = [f"{wl.prompt_tokens:,} prompt + {wl.output_tokens:,} output tokens", traffic]
    if wl.samples_per_prompt > 1:
        parts.append(f"best-of-{wl.samples_per_prompt} (shared prompt KV)")
    if wl.slo_ttft_s is not None:
        parts.append(f"TTFT ≤ {fmt_seconds(wl.slo_ttft_s)}")
    if wl.slo_tpot_s is not None:
        parts.append(f"TPOT ≤ {fmt_seconds(wl.slo_tpot_s)}")
    return " · ".join(parts)


# --------------------------------------------------------------------------- serving


def serve_tables(p: ServePlan) -> list[Table]:
    head = f"{p.spec.name} · weights {p.options.dtype} · KV {p.kv_dtype} · {_workload_line(p)}"
    c = p.chosen
    tables = []
    if c is None:
        t = Table(f"{head}\nDoes not fit", ["", "what is missing"], prose={1})
        t.add("does not fit", p.missing or "")
    else:
        t = Table(f"{head}\nPlan: {c.layout.gpus} x {c.gpu.name} ({c.layout.label()})", ["item", "value"], prose={1})
        usable = c.memory.get("usable_bytes", c.gpu.memory_bytes * (1 - p.options.headroom))  # less runtime overheads
        rows = [
            (
                "layout",
                f"tp {c.layout.tp} · pp {c.layout.pp} · ep {c.layout.ep}"
                + (f" · attention dp {c.layout.attn_dp}" if c.layout.attn_dp > 1 else "")
                + (
                    f" · {c.layout.prefill_instances} prefill + {c.layout.decode_instances} decode instances"
                    if c.layout.prefill_instances
                    else ""
                )
                + f" · {c.layout.replicas} replica(s)",
            ),
            ("GPUs", f"{c.layout.gpus} ({c.layout.gpus_per_replica} per replica)"),
            ("weights per GPU", fmt_bytes(c.memory["weights_bytes"])),
            ("KV cache + state per GPU", fmt_bytes(c.memory["kv_cache_bytes"] + c.memory.get("ssm_state_bytes", 0))),
            ("activations per GPU", fmt_bytes(c.memory["activations_bytes"])),
            ("memory per GPU", f"{fmt_bytes(c.memory['total_bytes'])} of {fmt_bytes(usable)} usable"),
            ("max concurrency per replica", f"{c.max_concurrency:,} requests (memory)"),
            ("batch per replica", f"{c.batch:,} (limit {c.batch_limit:,}: {c.limited_by})"),
            ("TTFT", f"{fmt_seconds(c.ttft_s)} under load ({_ttft_parts(c)})"),
            (
                "TPOT",
                f"{fmt_seconds(c.tpot_s)} ({_sol(c)}): mean inter-token latency at steady state ({c.bound}-bound "
                f"step of {c.batch:,} decodes + {c.prefill_tokens_per_step:,.0f} prefill tokens, comm "
                f"{c.comm_share:.0%}"
                + (f", {c.tokens_per_step:.2f} tokens per step" if c.tokens_per_step > 1 else "")
                + ")",
            ),
            ("output tokens/s per GPU", _tps(c.tokens_per_s_per_gpu)),
            ("output tokens/s, all", _tps(c.tokens_per_s)),
            ("power per GPU", f"{c.power_w_per_gpu:.0f} W of {c.gpu.tdp_w:.0f} W TDP"),
            ("energy per 1M output tokens", _kwh(c.energy_kwh_per_mtok)),
            ("cost per 1M output tokens", _usd(c.usd_per_mtok)),
        ]
        for r in rows:
            t.add(*r)
        t.highlight.add((1, 1))
    tables.append(t)
    tables.append(alternatives_table(p))
    if p.risks:
        tables.append(risks_table(p.risks))
    return tables


def _sol(c: Candidate) -> str:
    """The speed-of-light bound beside an expected figure: 'bound 5.1 ms, 83% of SOL'."""
    if not c.tpot_bound_s or not c.tpot_s:
        return "no bound"
    return f"bound {fmt_seconds(c.tpot_bound_s)}, {100 * c.tpot_bound_s / c.tpot_s:.0f}% of speed of light"


def _ttft_parts(c: Candidate) -> str:
    names = {"wait": "step in progress", "prefill": "chunked prefill", "kv_transfer": "KV transfer",
             "queue": "queueing"}  # fmt: skip
    return ", ".join(f"{names.get(k, k)} {fmt_seconds(v)}" for k, v in c.ttft_parts.items() if v > 0)


def risks_table(risks: list[str]) -> Table:
    t = Table("Risks", ["#", "risk"], prose={1})
    for i, x in enumerate(risks, 1):
        t.add(i, x)
    return t


def alternatives_table(p: ServePlan) -> Table:
    t = Table(
        "Alternatives" if p.chosen else "Layouts tried (closest first)",
        ["GPU", "layout", "GPUs", "max conc.", "TTFT", "TPOT", "tok/s/GPU", "energy/1M", "$/1M", "note"],
        prose={9},
        keys=2,
    )
    rows: list[Candidate] = ([p.chosen] if p.chosen else []) + p.alternatives()
    if not p.chosen:
        rows = sorted(p.candidates, key=lambda c: (c.missing_bytes_per_gpu, c.layout.gpus))[:8]
    for i, c in enumerate(rows):
        t.add(
            c.gpu.key,
            c.layout.label(),
            c.layout.gpus,
            fmt_int(c.max_concurrency) if c.max_concurrency else "-",
            fmt_seconds(c.ttft_s) if c.ttft_s else "-",
            fmt_seconds(c.tpot_s) if c.tpot_s else "-",
            _tps(c.tokens_per_s_per_gpu) if c.fits else "-",
            _kwh(c.energy_kwh_per_mtok) if c.fits else "-",
            _usd(c.usd_per_mtok) if c.fits else "-",
            "chosen" if (p.chosen is not None and i == 0) else (c.short_reason or "fits"),
        )
    if p.chosen:
        t.highlight.update({(0, j) for j in range(3)})
    return t


# --------------------------------------------------------------------------- training


def train_tables(p: TrainPlan) -> list[Table]:
    cfg = p.cfg
    head = (
        f"{p.spec.name} · train on {p.gpu.name} · {cfg.dtype} · seq {cfg.seq:,} · ZeRO-{cfg.zero} · "
        f"recompute {cfg.recompute} · MFU {cfg.mfu:g}"
    )
    s = Table(f"{head}\nCompute", ["quantity", "value"], prose={1})
    s.add("parameters (active)", f"{fmt_params(p.counts.total)} ({fmt_params(p.counts.active)})")
    s.add("tokens", f"{fmt_params(p.tokens)} ({p.tokens_source})")
    s.add("training FLOPs (with recomputation)", _flops(p.flops["hardware"]))
    s.add("model FLOPs (no recomputation)", _flops(p.flops["model"]))
    s.add("6ND (reference)", _flops(p.flops["six_nd"]))
    s.add("GPU-hours", f"{p.gpu_hours:,.0f}")
    s.add("effective MFU (model FLOPs)", f"{p.effective_mfu:.3f}")
    tables = [s]
    if p.chosen is None:
        t = Table("Does not fit", ["", "what is missing"], prose={1})
        t.add("does not fit", p.missing or "")
        tables.append(t)
    else:
        c = p.chosen
        lay = c.layout
        usable = p.usable_bytes  # memory x (1 - headroom) less runtime overheads
        m = Table(
            f"Layout: {lay.gpus} GPUs · tp {lay.tp} · pp {lay.pp} · dp {lay.replicas}"
            + (f" · ep {lay.ep}" if lay.ep > 1 else "")
            + (f" (smallest that fits: {p.smallest.layout.gpus})" if p.smallest else ""),
            ["memory per GPU", "size"],
        )
        for label, key in (
            ("weights", "weights_bytes"),
            ("gradients", "gradients_bytes"),
            ("optimizer state", "optimizer_bytes"),
            ("activations", "activations_bytes"),
            ("ZeRO-3 gathered layers", "zero3_gather_bytes"),
            ("optimizer in CPU memory", "cpu_optimizer_bytes"),
        ):
            if c.memory[key]:
                m.add(label, fmt_bytes(c.memory[key]))
        m.add("total", f"{fmt_bytes(c.memory['total_bytes'])} of {fmt_bytes(usable)} usable")
        m.highlight.add((len(m.rows) - 1, 1))
        tables.append(m)
        r = p.run
        run = Table(f"Run on {r['gpus']} GPUs", ["quantity", "value"], prose={1})
        run.add("wall clock", _hours(r["wall_clock_hours"]))
        run.add("steps (global batch)", f"{r['steps']:,} ({cfg.global_batch_tokens:,} tokens)")
        run.add("power per GPU", f"{r['power_w_per_gpu']:.0f} W")
        run.add("energy (GPU boards)", f"{r['energy_mwh']:,.1f} MWh")
        run.add("cost", _usd(r["cost_usd"]))
        run.add("checkpoint (weights + optimizer)", fmt_bytes(r["checkpoint_bytes"]))
        run.add(
            "checkpoint write",
            fmt_seconds(r["checkpoint_write_s"]) + (" (assumed 10 GB/s)" if r["checkpoint_write_assumed"] else ""),
        )
        run.add("failure rate", f"{r['failure_rate_per_gpu_hour']:.3g} per GPU-hour")
        if r["mtbf_hours"] is not None:
            run.add("job MTBF", _hours(r["mtbf_hours"]))
            run.add("expected interruptions", f"{r['expected_interruptions']:.1f}")
            run.add("checkpoint interval (Young/Daly)", fmt_seconds(r["checkpoint_interval_s"]))
            run.add("time lost to checkpoints + redo", f"{r['checkpoint_overhead_fraction']:.1%}")
        tables.append(run)
    alt = Table("Layouts (fewest GPUs first)", ["tp", "pp", "dp", "GPUs", "memory per GPU", "fits", "note"],
                prose={6})  # fmt: skip
    for a in p.candidates[:10]:
        alt.add(a.layout.tp, a.layout.pp, a.layout.replicas, a.layout.gpus, fmt_bytes(a.memory["total_bytes"]),
                "yes" if a.fits else "no", a.reason or "")  # fmt: skip
    tables.append(alt)
    if p.risks:
        tables.append(risks_table(p.risks))
    return tables


# --------------------------------------------------------------------------- swarm


def swarm_tables(sp: SwarmPlan) -> list[Table]:
    head = f"swarm {sp.swarm.name} · {_workload_line(sp)}"
    mt = Table(f"{head}\nMembers", ["member", "spec", "share", "GPU", "layout", "GPUs", "TTFT", "TPOT", "tok/s",
                                     "energy/1M", "note"], prose={10})  # fmt: skip
    for m in sp.members:
        c = m.plan.chosen
        if c is None:
            mt.add(m.name, m.plan.spec.name, f"{m.share:.0%}", "-", "-", "-", "-", "-", "-", "-", m.plan.missing or "")
        elif m.role == "router":
            mt.add(m.name, m.plan.spec.name, f"{m.share:.0%}", c.gpu.key, c.layout.label(), c.layout.gpus,
                   fmt_seconds(c.ttft_s), fmt_seconds(c.tpot_s), "-", "-",
                   f"router, {m.plan.workload.output_tokens} tokens out")  # fmt: skip
        else:
            mt.add(m.name, m.plan.spec.name, f"{m.share:.0%}", c.gpu.key, c.layout.label(), c.layout.gpus,
                   fmt_seconds(c.ttft_s), fmt_seconds(c.tpot_s), _tps(c.tokens_per_s), _kwh(c.energy_kwh_per_mtok),
                   c.limited_by)  # fmt: skip
    tables = [mt]
    tables.append(versus_table(sp))
    if sp.risks:
        tables.append(risks_table(sp.risks))
    return tables


def versus_table(sp: SwarmPlan) -> Table:
    members = f"{len([m for m in sp.members if m.role == 'specialist'])} specialists" + (
        " + router" if any(m.role == "router" for m in sp.members) else "")  # fmt: skip
    cols = ["", "swarm"]
    dense = summarize_dense(sp.against) if sp.against is not None else None
    if dense is not None:
        cols.append(sp.against.spec.name)  # type: ignore[union-attr]
    t = Table(f"Swarm ({members}) vs one dense model, same traffic" if dense else f"Swarm totals ({members})", cols)
    s = sp.totals if sp.fits else {}

    def row(label: str, key: str, f) -> None:
        cells = [label, f(s.get(key)) if s.get(key) is not None else "-"]
        if dense is not None:
            cells.append(f(dense.get(key)) if dense.get(key) is not None else "-")
        t.add(*cells)

    row("GPUs", "gpus", str)
    row("VRAM provisioned", "vram_bytes", fmt_bytes)
    row("VRAM used", "vram_used_bytes", fmt_bytes)
    row("weights", "weights_bytes", fmt_bytes)
    row("TTFT (mean, router included)", "ttft_s", fmt_seconds)
    row("TPOT (mean)", "tpot_s", fmt_seconds)
    row("output tokens/s", "tokens_per_s", _tps)
    row("power", "power_w", lambda x: f"{x / 1000:.2f} kW")
    row("energy per 1M output tokens", "energy_kwh_per_million_tokens", _kwh)
    row("cost per 1M output tokens", "usd_per_million_tokens", _usd)
    if dense is not None and not dense.get("fits"):
        t.caption = f"dense model: {dense.get('missing')}"
    if not sp.fits:
        t.caption = (t.caption + "\n" if t.caption else "") + f"swarm: {sp.missing}"
    return t


def plan_tables(kind: str, plan: Any) -> list[Table]:
    """The tables of a plan (``kind``: serve, train or swarm)."""
    return {"serve": serve_tables, "train": train_tables, "swarm": swarm_tables}[kind](plan)
