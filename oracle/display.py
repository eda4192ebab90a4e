"""Numbers as markd prints them for people: the terminal, the demo, report.html.

Machines get full precision (Redis, marks.csv, report.json); a person gets a price at its market's
precision (`29976.13`, not `29976.127500000002`), basis points to a tenth and shares as `77.4 %`.
"""

from __future__ import annotations

import math

__all__ = ["bps_text", "decimals", "metric_text", "percent_text", "price_text"]


def decimals(price: float) -> int:
    """A market's display precision: about seven significant digits (30012.45, 60.12345, 1.000312),
    so a move of a tenth of a basis point shows at any price."""
    if not math.isfinite(price) or price <= 0:
        return 2
    return max(2, 6 - math.floor(math.log10(price)))


def price_text(price: float, places: int | None = None, *, grouped: bool = False) -> str:
    """`price` with `places` decimals (default: its own precision); `-` for NaN or infinity."""
    if not math.isfinite(price):
        return "-"
    places = decimals(price) if places is None else places
    return f"{price:,.{places}f}" if grouped else f"{price:.{places}f}"


def percent_text(fraction: float | None) -> str:
    return "-" if fraction is None or not math.isfinite(fraction) else f"{fraction * 100:.1f} %"


def bps_text(bps: float | None) -> str:
    return "-" if bps is None or not math.isfinite(bps) else f"{bps:.1f} bps"


def metric_text(metric: str, value: float | None) -> str:
    """A replay metric of report.json (by its name) as the terminal and report.html show it."""
    if value is None:
        return "-"
    if metric == "availability":
        return percent_text(value)
    if metric.endswith("_bps"):
        return bps_text(value)
    if metric.endswith("_s"):
        return f"{value:.1f} s"
    return f"{value:g}"
