"""The JSON contract of ``godprof plan``: the plans' ``to_dict`` records, named as every other command names
the same concepts.

Across commands a spec is an object ``{name, family, path}`` and parameters are ``params.total`` and
``params.active`` (exact integers), as in ``godprof estimate``, ``compare``, ``sweep`` and ``specs``. The
plan records in ``godprof.plan.serving``/``training``/``swarm`` carry a spec name and flat
``params``/``params_active`` figures; this module rewrites them (serving plans nested in a swarm too) and
bumps the schema versions to ``/2``. ``layout`` is always present: the chosen ``{tp, pp, ep, replicas}``
(training adds ``dp``), or null when nothing fits and for a swarm, whose layouts are per member
(``members[].plan.layout``). Schemas: ``godprof/schemas/plan.*.json``.
"""

from __future__ import annotations

from typing import Any

from godprof.spec import Spec

PLAN_SCHEMAS = {"serve": "godprof.plan.serve/2", "train": "godprof.plan.train/2", "swarm": "godprof.plan.swarm/2"}


def spec_ref(spec: Spec) -> dict[str, Any]:
    """A spec as every JSON output names it."""
    return {"name": spec.name, "family": spec.family, "path": spec.path}


def _serve(d: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """A serving plan record with ``spec`` an object and ``params.total``/``params.active``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k == "schema":
            out[k] = PLAN_SCHEMAS["serve"]
        elif k == "spec":
            out[k] = spec_ref(spec)
        elif k == "params":
            out[k] = {"total": d["params"], "active": d["params_active"]}
        elif k != "params_active":
            out[k] = v
    return out


def plan_json(kind: str, result: Any) -> dict[str, Any]:
    """The JSON document of a plan (``kind``: serve, train or swarm)."""
    d = result.to_dict()
    if kind == "serve":
        return _serve(d, result.spec)
    if kind == "train":
        train = dict(d["train"])
        params = {"total": train.pop("params"), "active": train.pop("params_active")}
        out: dict[str, Any] = {}
        for k, v in d.items():
            if k == "schema":
                out[k] = PLAN_SCHEMAS["train"]
            elif k == "spec":
                out[k] = spec_ref(result.spec)
                out["params"] = params
            else:
                out[k] = train if k == "train" else v
        others = getattr(result, "other_gpus", None)
        if others:
            out["other_gpus"] = [
                {"gpu": o.gpu.key, "fits": o.fits, "gpu_hours": o.gpu_hours,
                 "gpus": o.chosen.layout.gpus if o.chosen else None} for o in others
            ]  # fmt: skip
        return out
    out = dict(d, schema=PLAN_SCHEMAS["swarm"])
    out["members"] = [
        dict(m, spec=spec_ref(member.plan.spec), plan=_serve(m["plan"], member.plan.spec))
        for m, member in zip(d["members"], result.members, strict=True)
    ]
    if d.get("against") is not None and result.against is not None:
        out["against"] = _serve(d["against"], result.against.spec)
    return out
