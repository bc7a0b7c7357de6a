"""All unit formatting in one place: bytes in binary units (GiB), counts and FLOPs in decimal units."""

from __future__ import annotations

import math
from fractions import Fraction

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


SIZE_RULE = (
    "k, M, G (or B), T are decimal (8k = 8,000; 1M = 1,000,000; 15T = 15e12); Ki, Mi, Gi, Ti are binary "
    "(8Ki = 8,192; 1Mi = 1,048,576); 15e12 and 1_000 work too; the result is a whole number >= 1"
)
_DECIMAL_SUFFIX = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9, "t": 10**12}
_BINARY_SUFFIX = {"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}


def parse_size(text: str) -> int:
    """Parse a size or count option, the one rule every option uses (``SIZE_RULE``).

    Suffixes are case-insensitive: k/M/G/B/T decimal (powers of 1000, as token counts and SI prefixes are
    quoted), Ki/Mi/Gi/Ti binary (powers of 1024, as IEC prefixes are). '8k' -> 8000, '8Ki' -> 8192,
    '1.5M' -> 1500000, '15e12' -> 15000000000000. Non-whole results, values below 1, NaN and infinity are
    errors (ValueError naming the text)."""
    t = text.strip().lower().replace("_", "")
    mult = 1
    for table, n in ((_BINARY_SUFFIX, 2), (_DECIMAL_SUFFIX, 1)):
        if len(t) > n and t[-n:] in table:
            mult, t = table[t[-n:]], t[:-n]
            break
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 8k = 8000, 8Ki = 8192, 1M, 15T)") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite size: {text!r}")
    if value * mult < 1:
        raise ValueError(f"not a positive whole size: {text!r}")
    try:
        exact = Fraction(t) * mult  # exact: '1.5M' is 1,500,000 even where value * mult rounds
    except (ValueError, ZeroDivisionError):  # pragma: no cover - float() accepted it
        raise ValueError(f"not a size: {text!r}") from None
    if exact.denominator != 1:
        raise ValueError(f"not a whole size: {text!r} is {float(exact):g}")
    return int(exact)
