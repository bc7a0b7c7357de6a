"""A swarm of specialists: several models, each serving a share of the traffic, behind an optional
router; planned member by member and summed, and set beside one dense model serving the same traffic.

Swarm file (YAML, safe loader; spec references are bundled names, YAML files or config.json files,
paths relative to the swarm file)::

    name: specialist-swarm
    description: four 8B specialists behind an 8B router
    router:                      # optional: reads every prompt, writes a few tokens (the choice)
      spec: llama-3-8b
      output_tokens: 4           # default 4
    specialists:
      - {name: code, spec: llama-3-8b, share: 0.4}
      - {name: chat, spec: llama-3-8b, share: 0.3}
      - {name: math, spec: llama-3-8b, share: 0.3}
    workload:                    # optional: the traffic of the whole swarm (a workload file's keys);
      prompt_tokens: 1024        # --workload or the traffic options replace it
      output_tokens: 256
      rate: 20

Shares must be positive and add up to 1. Each specialist is planned for its share of the traffic (a
rate is scaled, a concurrency scaled and rounded up); the router for all of it, with its own output
length, no TPOT SLO and the workload's TTFT SLO. A request's time to first token through the swarm is the
router's whole response time (its TTFT plus its output tokens) plus the specialist's TTFT.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from godprof.plan.serving import ServeOptions, ServePlan, plan_serving
from godprof.plan.workload import (
    ServingWorkload,
    WorkloadError,
    load_yaml_document,
    parse_workload,
)
from godprof.spec import Checker, KeyPath, Spec

_TOP_KEYS = {"name", "description", "router", "specialists", "workload"}
_MEMBER_KEYS = {"name", "spec", "share", "description"}
_ROUTER_KEYS = {"spec", "output_tokens", "name"}
DEFAULT_ROUTER_OUTPUT_TOKENS = 4


@dataclass(frozen=True)
class Member:
    name: str
    spec_ref: str
    share: float
    line: int | None = None


@dataclass(frozen=True)
class SwarmFile:
    name: str
    members: tuple[Member, ...]
    router_ref: str | None = None
    router_output_tokens: int = DEFAULT_ROUTER_OUTPUT_TOKENS
    workload: ServingWorkload | None = None
    description: str | None = None
    source: str | None = None


def _resolve_ref(ref: str, base: Path | None) -> str:
    """A spec reference relative to the swarm file's folder when such a file exists there."""
    if base is not None and ("/" in ref or ref.endswith((".yaml", ".yml", ".json"))):
        p = base / ref
        if p.exists():
            return str(p)
    return ref


def parse_swarm(data: Any, source: str | None = None, lines: dict[KeyPath, int] | None = None) -> SwarmFile:
    """Validate a swarm document; raises WorkloadError listing every problem with its line."""
    c = Checker(source, lines or {})
    d = c.mapping(data, ())
    if c.problems:
        raise WorkloadError(source, c.problems)
    c.keys(d, (), _TOP_KEYS, {"specialists"})
    base = Path(source).parent if source else None
    members: list[Member] = []
    raw = d.get("specialists")
    if "specialists" in d and (not isinstance(raw, list) or not raw):  # null too: a swarm needs members
        c.err(("specialists",), "expected a non-empty list of specialists ({name, spec, share})")
        raw = []
    names: set[str] = set()
    for i, m in enumerate(raw or []):
        p: KeyPath = ("specialists", i)
        md = c.mapping(m, p)
        if not md:
            continue
        c.keys(md, p, _MEMBER_KEYS, {"spec", "share"})
        ref = c.str_(md, "spec", p)
        share = c.float_(md, "share", p, 0.0)
        if isinstance(md.get("share"), int | float) and not isinstance(md.get("share"), bool) and md["share"] > 1:
            c.err((*p, "share"), f"a share is a fraction of the traffic (0..1], got {md['share']}")
        name = c.str_(md, "name", p) or f"specialist-{i + 1}"
        if name in names:
            c.err((*p, "name"), f"duplicate specialist name '{name}'")
        names.add(name)
        if ref:
            members.append(Member(name, _resolve_ref(ref, base), share, c.line(p)))
    total = sum(m.share for m in members)
    if members and all(m.share > 0 for m in members) and abs(total - 1.0) > 1e-6:
        c.err(("specialists",), f"shares add up to {total:g}, not 1")
    router_ref, router_out = None, DEFAULT_ROUTER_OUTPUT_TOKENS
    if d.get("router") is not None:
        rd = c.mapping(d["router"], ("router",))
        c.keys(rd, ("router",), _ROUTER_KEYS, {"spec"})
        ref = c.str_(rd, "spec", ("router",))
        router_ref = _resolve_ref(ref, base) if ref else None
        router_out = c.int_(rd, "output_tokens", ("router",), DEFAULT_ROUTER_OUTPUT_TOKENS)
    wl = None
    if d.get("workload") is not None:
        wd = c.mapping(d["workload"], ("workload",))
        sub = {k[1:]: v for k, v in (lines or {}).items() if k[:1] == ("workload",)}
        try:
            wl = parse_workload(wd, source, sub)
        except WorkloadError as e:
            for pr in e.problems:
                c.problems.append(replace(pr, key_path=f"workload.{pr.key_path}" if pr.key_path else "workload"))
    name = c.str_(d, "name", ()) or (Path(source).stem if source else "swarm")
    desc = c.str_(d, "description", ())
    if c.problems:
        c.problems.sort(key=lambda p: p.line or 0)
        raise WorkloadError(source, c.problems)
    return SwarmFile(name, tuple(members), router_ref, router_out, wl, desc, source)


def load_swarm(path: str | Path) -> SwarmFile:
    data, lines, source = load_yaml_document(path)
    return parse_swarm(data, source, lines)


def is_swarm_file(path: str | Path) -> bool:
    """True for a YAML file with a top-level ``specialists`` key (a model spec never has one)."""
    p = Path(path)
    if not p.is_file() or p.suffix not in (".yaml", ".yml"):
        return False
    try:
        data, _, _ = load_yaml_document(p)
    except Exception:
        return False
    return isinstance(data, dict) and "specialists" in data


# --------------------------------------------------------------------------- planning


@dataclass
class MemberPlan:
    name: str
    role: str  # "specialist" or "router"
    share: float
    plan: ServePlan


@dataclass
class SwarmPlan:
    swarm: SwarmFile
    workload: ServingWorkload
    options: ServeOptions
    members: list[MemberPlan]
    against: ServePlan | None = None
    totals: dict[str, Any] = field(default_factory=dict)
    risks: list[str] = field(default_factory=list)
    missing: str | None = None

    @property
    def fits(self) -> bool:
        return self.missing is None

    def to_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "schema": "godprof.plan.swarm/1",
            "mode": "swarm",
            "swarm": self.swarm.name,
            "workload": self.workload.to_dict(),
            "fits": self.fits,
            "gpus": t.get("gpus"),
            "layout": None,  # a swarm has one layout per member: see members[].plan.layout
            "missing": self.missing,
            "totals": dict(t),
            "members": [
                {"name": m.name, "role": m.role, "share": m.share, "spec": m.plan.spec.name, "plan": m.plan.to_dict()}
                for m in self.members
            ],
            "against": None if self.against is None else self.against.to_dict(),
            "against_totals": None if self.against is None else summarize_dense(self.against),
            "risks": list(self.risks),
        }


def summarize_dense(p: ServePlan) -> dict[str, Any]:
    """The same totals as a swarm's, for one model."""
    c = p.chosen
    if c is None:
        return {"fits": False, "missing": p.missing}
    return {
        "fits": True,
        "gpus": c.layout.gpus,
        "vram_bytes": c.layout.gpus * c.gpu.memory_bytes,
        "vram_used_bytes": c.layout.gpus * c.memory["total_bytes"],
        "weights_bytes": p.weights_bytes,
        "ttft_s": c.ttft_s,
        "tpot_s": c.tpot_s,
        "tokens_per_s": c.tokens_per_s,
        "power_w": c.power_w_per_gpu * c.layout.gpus,
        "energy_kwh_per_million_tokens": c.energy_kwh_per_mtok,
        "usd_per_million_tokens": c.usd_per_mtok,
        "gpu": c.gpu.key,
    }


def plan_swarm(
    swarm: SwarmFile,
    specs: dict[str, Spec],
    gpus: list[Any],
    wl: ServingWorkload,
    opts: ServeOptions,
    against: Spec | None = None,
) -> SwarmPlan:
    """Plan every member for its share (``specs`` maps each spec reference to its loaded Spec), sum the
    members, and plan ``against`` for the whole traffic. ``opts.max_gpus`` caps the swarm's total."""
    member_opts = replace(opts, max_gpus=None)
    members: list[MemberPlan] = []
    if swarm.router_ref is not None:
        rwl = replace(wl, output_tokens=swarm.router_output_tokens, samples_per_prompt=1, slo_tpot_s=None)
        members.append(
            MemberPlan("router", "router", 1.0, plan_serving(specs[swarm.router_ref], gpus, rwl, member_opts))
        )
    for m in swarm.members:
        members.append(
            MemberPlan(
                m.name, "specialist", m.share, plan_serving(specs[m.spec_ref], gpus, wl.scaled(m.share), member_opts)
            )
        )
    sp = SwarmPlan(swarm, wl, opts, members)
    bad = [m for m in members if not m.plan.fits]
    if bad:
        sp.missing = "; ".join(f"{m.name} ({m.plan.spec.name}): {m.plan.missing}" for m in bad)
    else:
        sp.totals = _totals(sp)
        if opts.max_gpus is not None and sp.totals["gpus"] > opts.max_gpus:
            sp.missing = f"the swarm needs {sp.totals['gpus']} GPUs, more than --max-gpus {opts.max_gpus}"
        sp.risks = _swarm_risks(sp)
    if against is not None:
        sp.against = plan_serving(against, gpus, wl, opts)
    return sp


def _totals(sp: SwarmPlan) -> dict[str, Any]:
    specialists = [m for m in sp.members if m.role == "specialist"]
    router = next((m for m in sp.members if m.role == "router"), None)
    chosen = [m.plan.chosen for m in sp.members]
    assert all(c is not None for c in chosen)
    r_lat = 0.0
    if router is not None:
        rc = router.plan.chosen
        assert rc is not None
        r_lat = rc.ttft_s + router.plan.workload.output_tokens * rc.tpot_s
    ttfts = [(m.share, r_lat + m.plan.chosen.ttft_s) for m in specialists]  # type: ignore[union-attr]
    tpots = [(m.share, m.plan.chosen.tpot_s) for m in specialists]  # type: ignore[union-attr]
    tokens = sum(m.plan.chosen.tokens_per_s for m in specialists)  # type: ignore[union-attr]
    power = sum(c.power_w_per_gpu * c.layout.gpus for c in chosen)  # type: ignore[union-attr]
    gpus = sum(c.layout.gpus for c in chosen)  # type: ignore[union-attr]
    usd = None
    prices = [sp.options.price(c.gpu) for c in chosen]  # type: ignore[union-attr]  # per GPU type
    if all(p is not None for p in prices):
        gpu_usd_per_hour = sum(c.layout.gpus * p for c, p in zip(chosen, prices, strict=True))  # type: ignore
        usd = gpu_usd_per_hour / 3600.0 / tokens * 1e6
    from godprof.plan.power import energy_kwh_per_million

    return {
        "gpus": gpus,
        "vram_bytes": sum(c.layout.gpus * c.gpu.memory_bytes for c in chosen),  # type: ignore[union-attr]
        "vram_used_bytes": sum(c.layout.gpus * c.memory["total_bytes"] for c in chosen),  # type: ignore[union-attr]
        "weights_bytes": sum(m.plan.weights_bytes for m in sp.members),
        "router_latency_s": r_lat,
        "ttft_s": sum(s * t for s, t in ttfts),
        "ttft_worst_s": max(t for _, t in ttfts),
        "tpot_s": sum(s * t for s, t in tpots),
        "tpot_worst_s": max(t for _, t in tpots),
        "tokens_per_s": tokens,
        "power_w": power,
        "energy_kwh_per_million_tokens": energy_kwh_per_million(power, tokens),
        "usd_per_million_tokens": usd,
    }


def _swarm_risks(sp: SwarmPlan) -> list[str]:
    t = sp.totals
    wl = sp.workload
    risks = []
    if wl.slo_ttft_s is not None and t["ttft_worst_s"] > wl.slo_ttft_s:
        risks.append(
            f"through the router, TTFT reaches {t['ttft_worst_s'] * 1e3:.0f} ms, over the "
            f"{wl.slo_ttft_s * 1e3:.0f} ms SLO"
        )
    if t["router_latency_s"] > 0:
        risks.append(f"the router adds {t['router_latency_s'] * 1e3:.0f} ms to every request's time to first token")
    small = [m.name for m in sp.members if m.role == "specialist" and m.plan.chosen and m.plan.chosen.load < 0.3]
    if small:
        risks.append(
            f"{', '.join(small)} run below 30% of their capacity: a smaller GPU or sharing GPUs would be cheaper"
        )
    risks.append("shares are fixed: a shift in traffic between specialists needs spare capacity on each")
    risks.append("quality is not modelled: the comparison assumes the swarm answers as well as the model beside it")
    return risks
