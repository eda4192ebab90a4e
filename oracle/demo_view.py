"""The live terminal view of `markd demo`, drawn with rich: what the oracle did this instant.

    one table, markets across:
      mark rows   the mark as the margin engine reads it from Redis, at the market's precision;
                  confidence in bps; status in colour and tier; the simulated true price
      perp rows   where a market has a perp mark (DESIGN.md "Perpetual mark price"), as read from
                  Redis: the perp mark, its premium over the index in bps, and its three
                  candidates c1 (index + basis EMA), c2 (the own book) and c3 (the other perps)
      venue rows  each venue's latest quote, green when it counts, red with the reason when it
                  was excluded, dim when unused or absent
    events        tier changes, holds, exclusions, outages and disputes opened and closed, newest
                  last, and the scripted incidents as they are announced

`render(frame)` is pure: a Frame in, a rich renderable out. The demo gathers the Frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from oracle import display
from oracle.demo_script import Event
from oracle.display import decimals
from oracle.models import Mark, PerpMark

STATUS_STYLE = {"ok": "bold green", "degraded": "bold yellow", "held": "bold magenta", "stale": "bold red"}
EVENT_STYLE = {
    "incident": "bold cyan",
    "held": "magenta",
    "released": "green",
    "dispute_opened": "bold magenta",
    "dispute_closed": "green",
    "excluded": "red",
    "readmitted": "green",
    "tier": "yellow",
}


def price_text(price: float, places: int) -> str:
    return display.price_text(price, places, grouped=True)


@dataclass(frozen=True, slots=True)
class VenueCell:
    pair: str
    price: float | None  # the venue's latest quote, in the pair's own currency; None: nothing yet
    used: bool  # in the mark
    reason: str | None  # why it was excluded, if it was


@dataclass(frozen=True, slots=True)
class Frame:
    header: str
    marks: Mapping[str, Mark | None]  # as read back from Redis
    truth: Mapping[str, float]  # the simulation's true prices
    venues: Mapping[str, Mapping[str, VenueCell]]  # market -> source -> cell
    sources: Sequence[str]  # the venue rows, in order
    events: Sequence[Event]
    banner: str  # the incident in progress, or ""
    perps: Mapping[str, PerpMark | None] = field(default_factory=dict)  # as read back from Redis


# The perp rows: a label, and what each shows of a perp mark (its candidates at the market's precision).
PERP_CANDIDATES = (("c1 index+basis", "c1"), ("c2 own book", "c2"), ("c3 other perps", "c3"))


def render(frame: Frame, height: int = 50) -> RenderableType:
    """The whole view, fitted to `height` terminal rows: the event log gets what the table leaves."""
    table = market_table(frame)
    parts: list[RenderableType] = [Text(frame.header, style="bold")]
    if frame.banner:
        parts.append(Text(frame.banner, style="bold black on cyan"))
    used = len(parts) + 2 * bool(frame.banner) + 6 + 5 + len(frame.sources) + 2 + perp_rows(frame)
    parts += [table, events_text(frame.events[-max(3, height - used) :])]
    return Group(*parts)


def market_table(frame: Frame) -> Table:
    """Markets across; the mark rows (as the margin engine reads them), then one row per venue."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, caption_justify="left")
    table.add_column("")
    markets = list(frame.marks)
    for market in markets:
        table.add_column(market, justify="right")
    places = {m: decimals(frame.truth.get(m, math.nan)) for m in markets}
    marks = [frame.marks[m] for m in markets]
    table.add_row("mark", *(price_text(m.price, places[k]) if m else "-" for k, m in zip(markets, marks, strict=True)))
    table.add_row("confidence", *(_conf_bps(m) for m in marks))
    table.add_row("status", *(_status(m) for m in marks))
    table.add_row(
        Text("true price", style="dim"),
        *(Text(price_text(frame.truth.get(m, math.nan), places[m]), style="dim") for m in markets),
        end_section=True,
    )
    if perp_rows(frame):
        add_perp_rows(table, frame, markets, places)
    for source in frame.sources:
        cells = [venue_text(frame.venues.get(m, {}).get(source), places[m]) for m in markets]
        table.add_row(source, *cells)
    table.caption = "venue rows: latest quote; green counts, red was excluded (and why), dim is unused"
    return table


def perp_rows(frame: Frame) -> int:
    """How many rows the perp section takes: none when no market has a perp mark."""
    return 2 + len(PERP_CANDIDATES) if any(frame.perps.values()) else 0


def add_perp_rows(table: Table, frame: Frame, markets: list[str], places: Mapping[str, int]) -> None:
    perps = [frame.perps.get(m) for m in markets]
    table.add_row(
        "perp mark", *(price_text(p.price, places[m]) if p else "" for m, p in zip(markets, perps, strict=True))
    )
    table.add_row("premium", *(_premium(p) for p in perps))
    for i, (label, name) in enumerate(PERP_CANDIDATES):
        cells = [
            _candidate(getattr(p, name), places[m]) if p else Text("") for m, p in zip(markets, perps, strict=True)
        ]
        table.add_row(Text(label, style="dim"), *cells, end_section=i == len(PERP_CANDIDATES) - 1)


def _premium(perp: PerpMark | None) -> Text:
    """The perp mark over the index it was computed against, in bps; with its status unless ok."""
    if perp is None or not perp.index > 0:
        return Text("")
    shown = f"{perp.premium_bps:+.1f} bps"
    if perp.status.value == "ok":
        return Text(shown)
    return Text(f"{shown} {perp.status.value}", style=STATUS_STYLE.get(perp.status.value, ""))


def _candidate(value: float, places: int) -> Text:
    """A candidate price, or `-` where it was not computed (the index was not usable)."""
    return Text(price_text(value, places) if math.isfinite(value) else "-", style="dim")


def _conf_bps(mark: Mark | None) -> str:
    if mark is None or not mark.price > 0:
        return "-"
    return f"±{mark.confidence / mark.price * 1e4:.1f} bps"


def _status(mark: Mark | None) -> Text:
    if mark is None:
        return Text("missing", style="dim")
    return Text(f"{mark.status.value} tier {mark.tier}", style=STATUS_STYLE.get(mark.status.value, ""))


def venue_text(cell: VenueCell | None, places: int) -> Text:
    if cell is None:
        return Text("")
    if cell.price is None:
        return Text("no quote", style="dim")
    shown = price_text(cell.price, places)
    if cell.reason is not None:
        return Text(f"{shown} {cell.reason}", style="bold red")
    return Text(shown, style="green" if cell.used else "dim")


def events_text(events: Sequence[Event]) -> Text:
    body = Text("events\n", style="bold")
    if not events:
        body.append("nothing yet", style="dim")
    for i, event in enumerate(events):
        if i:
            body.append("\n")
        body.append(event.line(), style=EVENT_STYLE.get(event.kind, ""))
    return body
