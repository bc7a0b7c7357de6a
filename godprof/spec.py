"""Architecture specs: the data model and the YAML loader with validation.

A spec is data (``yaml.safe_load`` only). It names token mixers and channel mixers (FFNs) once, then
a layout says which mixer and FFN each layer uses. Everything downstream (analytic counts, the
PyTorch build, reports) reads the resolved per-layer list from ``Spec.layers``.

Format (see README and specs/ for one example per family)::

    name: llama-3-8b
    family: dense            # dense | moe | ssm | linear | hybrid
    source: https://...
    published: {params_total: 8030261248}
    model:
      vocab_size: 128256
      hidden_size: 4096
      num_layers: 32
      norm: rmsnorm          # rmsnorm | layernorm
    mixers:
      attn: {type: attention, num_heads: 32, num_kv_heads: 8}
    ffns:
      mlp: {type: mlp, intermediate_size: 14336}
    layout: {mixer: attn, ffn: mlp}   # optional when there is one mixer and one ffn

A layout entry is a name (every layer), a list of names (one per layer), or a pattern mapping with
``default`` and any of ``every: {period, offset, use}``, ``layers: {indices, use}``,
``first: {count, use}`` (precedence: first > layers > every > default).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from godprof.checker import Checker, KeyPath, load_yaml, read_text
from godprof.dtypes import WeightFormats
from godprof.errors import NotFoundError
from godprof.kinds import FFN_KINDS, MIXER_KINDS, FfnKind, MixerKind
from godprof.kinds.base import ACTIVATIONS, parse_kind
from godprof.spec_layout import resolve_layout
from godprof.spec_sections import (
    _PUBLISHED_KEYS,
    NORMS,
    ModelConfig,
    Mtp,
    Published,
    parse_model,
    parse_mtp,
    parse_weights,
)

FAMILIES = ("dense", "moe", "ssm", "linear", "hybrid")
__all__ = [
    "ACTIVATIONS", "FAMILIES", "NORMS", "Checker", "KeyPath", "Layer", "ModelConfig", "Mtp", "Published", "Spec",
    "load_spec", "load_yaml", "parse_spec", "parse_spec_text",
]  # fmt: skip


# --------------------------------------------------------------------------- data model


Mixer = MixerKind  # a token mixer: any registered kind (godprof.kinds.MIXER_KINDS)
Ffn = FfnKind  # a channel mixer (godprof.kinds.FFN_KINDS)


@dataclass(frozen=True)
class Layer:
    index: int
    mixer_name: str
    mixer: Mixer
    ffn_name: str
    ffn: Ffn | None

    @property
    def kind(self) -> str:
        """Layer kind for breakdowns, e.g. ``attn+moe`` or ``mamba1``."""
        return self.mixer.label if self.ffn is None else f"{self.mixer.label}+{self.ffn.label}"


@dataclass(frozen=True)
class Spec:
    name: str
    family: str
    model: ModelConfig
    mixers: dict[str, Mixer]
    ffns: dict[str, Ffn | None]
    layer_mixers: tuple[str, ...]
    layer_ffns: tuple[str, ...]
    source: str | None = None
    description: str | None = None
    published: Published | None = None
    mtp: Mtp | None = None
    weights: WeightFormats | None = None  # the formats its checkpoint ships (None: bf16 throughout)
    path: str | None = field(default=None, compare=False)

    def mtp_layer(self) -> Layer | None:
        """The block each multi-token-prediction module holds (None without MTP)."""
        if self.mtp is None:
            return None
        return Layer(self.model.num_layers, self.mtp.mixer, self.mixers[self.mtp.mixer], self.mtp.ffn,
                     self.ffns[self.mtp.ffn])  # fmt: skip

    def layers(self) -> list[Layer]:
        return [
            Layer(i, mn, self.mixers[mn], fn, self.ffns[fn])
            for i, (mn, fn) in enumerate(zip(self.layer_mixers, self.layer_ffns, strict=True))
        ]

    @property
    def has_attention(self) -> bool:
        return any("attention" in self.mixers[m].categories for m in set(self.layer_mixers))

    @property
    def has_ssm(self) -> bool:
        return any("ssm" in self.mixers[m].categories for m in set(self.layer_mixers))

    @property
    def has_linear(self) -> bool:
        """Linear-time mixers other than SSMs: linear attention (gated delta rule, lightning), RWKV,
        short convolutions."""
        return any("linear" in self.mixers[m].categories for m in set(self.layer_mixers))

    @property
    def has_moe(self) -> bool:
        return any(f is not None and f.sparse for f in (self.ffns[n] for n in set(self.layer_ffns)))


# --------------------------------------------------------------------------- section parsers

_TOP_KEYS = {
    "name", "family", "source", "description", "published", "model", "mixers", "ffns", "layout", "mtp", "weights",
}  # fmt: skip


def _check_family(c: Checker, spec: Spec) -> None:
    """dense: softmax attention only; moe: routed experts (with one kind of mixer); ssm: state-space
    mixers, no attention; linear: linear-attention, RWKV or convolution mixers, no attention; hybrid:
    attention beside SSM or linear mixers (with or without MoE)."""
    fam = spec.family
    attn, ssm, lin, moe = spec.has_attention, spec.has_ssm, spec.has_linear, spec.has_moe
    recurrent = ssm or lin
    ok = {
        "dense": attn and not recurrent and not moe,
        "moe": moe and not (attn and recurrent),
        "ssm": ssm and not attn,
        "linear": lin and not attn and not ssm,
        "hybrid": attn and recurrent,
    }[fam]
    if not ok:
        have = [w for w, b in (("attention", attn), ("SSM", ssm), ("linear mixers", lin), ("MoE", moe)) if b]
        c.err(("family",), f"family '{fam}' does not match the layers, which use {' + '.join(have) or 'nothing'}")


def parse_spec(data: Any, source: str | None = None, lines: dict[KeyPath, int] | None = None) -> Spec:
    """Validate a spec document (already parsed YAML) and return the resolved Spec.

    Raises SpecError listing every problem with its key path and line.
    """
    c = Checker(source, lines or {})
    d = c.mapping(data, ())
    c.raise_if_any()
    c.keys(d, (), _TOP_KEYS, {"name", "family", "model", "mixers"})
    name = c.str_(d, "name", (), "unnamed") or "unnamed"
    family = c.choice(d, "family", (), FAMILIES, "dense")
    model = parse_model(c, d.get("model", {}))
    # the kinds size themselves from the hidden size: 0 tells them it is invalid (its error is recorded)
    hidden_known = not any(p.key_path == "model.hidden_size" for p in c.problems)

    mixers: dict[str, Mixer] = {}
    for key, raw in c.mapping(d.get("mixers", {}), ("mixers",)).items():
        ok, m = parse_kind(c, raw, ("mixers", key), model.hidden_size if hidden_known else 0, MIXER_KINDS, "mixer")
        if ok:
            mixers[key] = m
    if "mixers" in d and not d["mixers"]:
        c.err(("mixers",), "define at least one token mixer")
    if d.get("ffns") is not None and not d["ffns"]:
        c.err(("ffns",), "define at least one FFN, or leave the section out (pure SSM stacks need none)")

    ffns: dict[str, Ffn | None] = {}
    raw_ffns = d.get("ffns")
    if raw_ffns is None:
        ffns["none"] = None  # pure SSM stacks need no ffns section
    else:
        for key, raw in c.mapping(raw_ffns, ("ffns",)).items():
            ok, f = parse_kind(c, raw, ("ffns", key), model.hidden_size if hidden_known else 0, FFN_KINDS, "ffn",
                               ("none",))  # fmt: skip
            if ok:
                ffns[key] = f

    layout = c.mapping(d.get("layout", {}), ("layout",))
    c.keys(layout, ("layout",), {"mixer", "ffn"}, set())
    n = model.num_layers
    layer_mixers = layer_ffns = ()
    for attr, names, what in (("mixer", mixers, "mixers"), ("ffn", ffns, "ffns")):
        if attr in layout:
            # with model.num_layers invalid, a layout's length or indices would only echo that error
            lc = Checker(c.source, c.lines) if "model.num_layers" in {p.key_path for p in c.problems} else c
            # names whose entry is invalid still count as defined (their own error says what is wrong)
            entries = d.get(what) if isinstance(d.get(what), dict) else {}
            resolved = resolve_layout(lc, layout[attr], ("layout", attr), set(names) | set(entries), n)
        elif len(names) == 1:
            resolved = (next(iter(names)),) * n
        else:
            if names:
                c.err(("layout",), f"several {what} are defined ({', '.join(names)}): say which each layer uses "
                      f"with layout.{attr}")  # fmt: skip
            resolved = ()
        if attr == "mixer":
            layer_mixers = resolved
        else:
            layer_ffns = resolved

    pub = None
    if d.get("published") is not None:
        pp: KeyPath = ("published",)
        pd = c.mapping(d["published"], pp)
        c.keys(pd, pp, _PUBLISHED_KEYS, set())
        pub = Published(
            params_total=c.opt_int(pd, "params_total", pp, maximum=10**15),
            params_active=c.opt_int(pd, "params_active", pp, maximum=10**15),
            tolerance=c.float_(pd, "tolerance", pp, 0.01),
            note=c.str_(pd, "note", pp),
        )
    weights = parse_weights(c, d.get("weights"))
    c.raise_if_any()
    spec = Spec(
        name=name,
        family=family,
        model=model,
        mixers=mixers,
        ffns=ffns,
        layer_mixers=layer_mixers,
        layer_ffns=layer_ffns,
        source=c.str_(d, "source", ()),
        description=c.str_(d, "description", ()),
        published=pub,
        mtp=parse_mtp(c, d.get("mtp"), mixers, ffns),
        weights=weights,
        path=source,
    )
    _check_family(c, spec)
    for mn, fn in sorted(set(zip(spec.layer_mixers, spec.layer_ffns, strict=True))):
        need = getattr(spec.ffns[fn], "pairs_with", None)
        if need is not None and spec.mixers[mn].type != need:
            c.err(
                ("ffns", fn),
                f"a {spec.ffns[fn].type} FFN needs a {need} mixer in its layer; layers using it have {mn!r}",
            )
    c.raise_if_any()
    return spec


def parse_spec_text(text: str, source: str | None = None) -> Spec:
    """Parse YAML text (safe loader only) into a validated Spec."""
    data, lines = load_yaml(text, source)
    return parse_spec(data, source, lines)


# --------------------------------------------------------------------------- finding specs


def _bundled_dir() -> Path:
    """The folder of bundled specs: package ``godprof.specs`` (site-packages/godprof/specs after an
    install; the repository's specs/ in an editable install), or specs/ beside the package when run
    from a source checkout. Found without importing importlib.resources, which costs more start-up
    time than the whole estimate."""
    from importlib.util import find_spec

    try:
        found = find_spec("godprof.specs")
    except ModuleNotFoundError:
        found = None
    if found is not None and found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations)))
    checkout = Path(__file__).resolve().parent.parent / "specs"
    if checkout.is_dir():
        return checkout
    raise RuntimeError("godprof is installed without its bundled specs (package godprof.specs)")


def bundled_spec_names() -> list[str]:
    """Names of the specs shipped with godprof (the repository's specs/ folder)."""
    return sorted(p.stem for p in _bundled_dir().glob("*.yaml"))


def bundled_spec_path(name: str) -> Path | None:
    """The bundled spec called ``name``, matched case-insensitively (``llama-3-8B`` is llama-3-8b)."""
    path = _bundled_dir() / f"{name}.yaml"
    if path.is_file():
        return path
    folded = {n.lower(): n for n in bundled_spec_names()}.get(name.lower())
    return _bundled_dir() / f"{folded}.yaml" if folded is not None else None


def load_spec(ref: str | Path) -> Spec:
    """Load a spec from a YAML path, a Hugging Face ``config.json`` path, a model folder holding a
    config.json (a downloaded checkpoint), or a bundled spec name (case-insensitive).

    Raises SpecError for invalid content and NotFoundError for a name or path that matches nothing.
    """

    path = Path(ref)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NotFoundError(f"{ref}: a folder without a config.json (give a spec file, config.json or folder)")
        path = path / "config.json"
    if path.suffix == ".json":
        if not path.is_file():
            raise NotFoundError(f"no such file: {ref}")
        from godprof.hf import spec_from_config_file  # config.json import (issue: real architectures)

        return spec_from_config_file(path)
    if path.is_file():
        return parse_spec_text(read_text(path), str(path))
    name = str(ref)
    if "/" not in name and not name.endswith((".yaml", ".yml")):
        bundled = bundled_spec_path(name)
        if bundled is not None:
            return parse_spec_text(bundled.read_text(encoding="utf-8"), f"{bundled.stem}.yaml (bundled)")
    names = bundled_spec_names()
    near = difflib.get_close_matches(path.stem.lower(), names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else "; `godprof specs` lists the bundled specs"
    raise NotFoundError(f"no spec file or bundled spec named {str(ref)!r}{hint}")


def iter_layer_groups(spec: Spec) -> Iterator[tuple[str, str, list[int]]]:
    """(mixer name, ffn name, layer indices) for each distinct layer kind, in first-seen order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(spec.layer_mixers, spec.layer_ffns, strict=True)):
        groups.setdefault(key, []).append(i)
    for (m, f), idx in groups.items():
        yield m, f, idx
