"""A spec's layout: which mixer and which FFN each layer uses.

A layout entry is a name (every layer), a list of names (one per layer), or a pattern mapping with
``default`` and any of ``every: {period, offset, use}``, ``layers: {indices, use}``,
``first: {count, use}`` (precedence: first > layers > every > default).
"""

from __future__ import annotations

import difflib
from typing import Any

from godprof.checker import Checker, KeyPath, _show


def resolve_layout(c: Checker, raw: Any, p: KeyPath, names: set[str], n_layers: int) -> tuple[str, ...]:
    """Resolve one layout entry (name, list, or pattern) to a name per layer."""
    fallback = (sorted(names)[0],) * n_layers if names else ()

    def known(name: Any, path: KeyPath) -> bool:
        if not isinstance(name, str):
            c.err(path, f"expected the name of one of {', '.join(sorted(names))}, got {_show(name)}")
            return False
        if name in names:
            return True
        near = difflib.get_close_matches(name, sorted(names), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; defined: {', '.join(sorted(names))}"
        c.err(path, f"'{name}' is not defined{hint}")
        return False

    if isinstance(raw, str):
        return (raw,) * n_layers if known(raw, p) else fallback
    if isinstance(raw, list):
        if len(raw) != n_layers:
            c.err(p, f"explicit layout has {len(raw)} entries but model.num_layers is {n_layers}")
            return fallback
        ok = all([known(x, (*p, i)) for i, x in enumerate(raw)])
        return tuple(raw) if ok else fallback
    d = c.mapping(raw, p)
    if not d:
        return fallback
    c.keys(d, p, {"default", "every", "layers", "first"}, {"default"})
    default = d.get("default")
    if default is None or not known(default, (*p, "default")):
        return fallback
    out = [default] * n_layers
    if "every" in d:
        e = c.mapping(d["every"], (*p, "every"))
        ep = (*p, "every")
        c.keys(e, ep, {"period", "offset", "use"}, {"period", "use"})
        period = c.int_(e, "period", ep)
        offset = c.int_(e, "offset", ep, 0, minimum=0)
        if offset >= period:
            c.err((*ep, "offset"), f"offset ({offset}) must be smaller than period ({period})")
        elif known(e.get("use"), (*ep, "use")):
            for i in range(offset, n_layers, period):
                out[i] = e["use"]
    if "layers" in d:
        lp = (*p, "layers")
        ld = c.mapping(d["layers"], lp)
        c.keys(ld, lp, {"indices", "use"}, {"indices", "use"})
        idx = ld.get("indices", [])
        if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            c.err((*lp, "indices"), "expected a list of layer indices")
        elif len(idx) > n_layers:
            c.err((*lp, "indices"), f"lists {len(idx)} layers but model.num_layers is {n_layers}")
        elif known(ld.get("use"), (*lp, "use")):
            for i in idx:
                if not 0 <= i < n_layers:
                    c.err((*lp, "indices"), f"layer index {i} is out of range 0..{n_layers - 1}")
                else:
                    out[i] = ld["use"]
    if "first" in d:
        fp = (*p, "first")
        f = c.mapping(d["first"], fp)
        c.keys(f, fp, {"count", "use"}, {"count", "use"})
        count = c.int_(f, "count", fp, 0, minimum=0)
        if count > n_layers:
            c.err((*fp, "count"), f"count ({count}) exceeds model.num_layers ({n_layers})")
        elif known(f.get("use"), (*fp, "use")):
            for i in range(count):
                out[i] = f["use"]
    return tuple(out)
