"""Bybit USDT perpetuals: `/v5/market/tickers?category=linear`, the spot simulation's ticker fields.

Real linear tickers add funding, mark and index fields that markd does not read.
"""

from __future__ import annotations

from oracle.sim.venues.bybit import Bybit


class BybitPerp(Bybit):
    name = "bybit_perp"
    category = "linear"
