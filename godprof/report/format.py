"""All unit formatting in one place: bytes in binary units (GiB), counts and FLOPs in decimal units."""

from __future__ import annotations

_DECIMAL = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_BINARY = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def _decimal(x: float, unit: str, digits: int = 3) -> str:
    for scale, prefix in _DECIMAL:
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g} {prefix}{unit}".rstrip()
    return f"{x:.{digits}g} {unit}".rstrip()


def fmt_bytes(n: float | None) -> str:
    """Bytes in binary units: 16060522496 -> '14.96 GiB'."""
    if n is None:
        return "-"
    for scale, unit in _BINARY:
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def fmt_params(n: float | None) -> str:
    """Parameter counts in decimal units: 8030261248 -> '8.03 B'."""
    if n is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}"
    return f"{int(n)}"


def fmt_flops(n: float | None) -> str:
    """FLOPs in decimal units: 6.59e13 -> '65.9 TFLOP'."""
    return "-" if n is None else _decimal(n, "FLOP")


def fmt_rate(n: float | None, unit: str) -> str:
    """A rate in decimal units: fmt_rate(3.35e12, 'B/s') -> '3.35 TB/s'."""
    return "-" if n is None else _decimal(n, unit)


def fmt_seconds(s: float | None) -> str:
    """Seconds as s, ms or µs with three significant digits."""
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:+.{digits}f}%"


def fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def parse_size(text: str) -> int:
    """Parse '4096', '4k', '32K', '1M', '1.5m' into an integer (k = 1024, as context lengths are quoted)."""
    t = text.strip().lower().replace("_", "")
    mult = 1
    if t and t[-1] in "kmg":
        mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[t[-1]]
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 8k, 1M)") from None
    result = value * mult
    if result < 1 or not float(result).is_integer():
        raise ValueError(f"not a positive whole size: {text!r}")
    return int(result)
