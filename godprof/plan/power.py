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
