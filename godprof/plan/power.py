"""Power and money: the board power model behind energy per token, and cost from a GPU-hour price.

Power of one GPU at utilisation u (0..1 of the bound resource, compute or memory bandwidth):

    P(u) = TDP x (idle_fraction + (1 - idle_fraction) x u)

a linear idle-to-TDP model (the form used by ML CO2 / "Energy and Policy Considerations" style
estimates, and what DCGM power traces of LLM serving look like to first order: memory-bound decode
draws well above idle but below TDP). ``IDLE_FRACTION`` = 0.2 is an H100 SXM with a model loaded
and clocks up (~140 W of 700 W); pass the figure measured on your cards when you have one.
Counts GPU board power only: no host CPUs, network, storage or cooling (multiply by your PUE).
"""

from __future__ import annotations

IDLE_FRACTION = 0.2
J_PER_KWH = 3.6e6


def gpu_power_w(tdp_w: float, utilisation: float, idle_fraction: float = IDLE_FRACTION) -> float:
    """Board power of one GPU (W) at ``utilisation`` of its bound resource, clamped to [0, 1]."""
    u = min(1.0, max(0.0, utilisation))
    return tdp_w * (idle_fraction + (1.0 - idle_fraction) * u)


def energy_kwh_per_million(power_w_total: float, tokens_per_s: float) -> float:
    """kWh to produce one million tokens at a steady ``tokens_per_s`` drawing ``power_w_total`` watts."""
    return power_w_total / tokens_per_s * 1e6 / J_PER_KWH


def cost_per_million(gpus: int, usd_per_gpu_hour: float, tokens_per_s: float) -> float:
    """USD per one million tokens: GPU-hours spent per million tokens x price."""
    return gpus * usd_per_gpu_hour / 3600.0 / tokens_per_s * 1e6


def parse_prices(text: str) -> tuple[float | None, dict[str, float]]:
    """``--usd-per-gpu-hour``: a plain price for every GPU ('2.5'), or GPU=PRICE pairs ('h100=2.5,b200=5'),
    or both ('2,b200=5': 2 for every GPU the pairs do not name). Names are returned as given (the caller
    resolves them with ``gpus.load_gpu``). Raises ValueError with an example on anything else."""
    flat: float | None = None
    named: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.rpartition("=")
        try:
            price = float(value)
        except ValueError:
            raise ValueError(f"--usd-per-gpu-hour: not a price: {part!r} (examples: 2.5, h100=2.5,b200=5)") from None
        if not price >= 0 or price == float("inf"):
            raise ValueError(f"--usd-per-gpu-hour: a price must be a finite number >= 0, got {part!r}")
        if sep:
            if not name.strip():
                raise ValueError(f"--usd-per-gpu-hour: missing GPU name in {part!r} (example: h100=2.5)")
            named[name.strip()] = price
        elif flat is not None:
            raise ValueError(f"--usd-per-gpu-hour: two plain prices in {text!r}; name the GPUs (h100=2.5,b200=5)")
        else:
            flat = price
    if flat is None and not named:
        raise ValueError("--usd-per-gpu-hour: give a price (2.5) or GPU=PRICE pairs (h100=2.5,b200=5)")
    return flat, named


def gpu_price(gpu: object, by_key: dict[str, float] | None, flat: float | None) -> float | None:
    """USD per GPU-hour for ``gpu``: its entry in ``by_key`` (GPU keys), else ``flat``, else the database's
    ``usd_per_hour`` (a published on-demand price with its source), else None (no cost shown)."""
    key = getattr(gpu, "key", None)
    if by_key and key in by_key:
        return by_key[key]
    if flat is not None:
        return flat
    return getattr(gpu, "usd_per_hour", None)
