"""OKX perpetual swaps: the spot simulation's endpoints and channel, over instIds `BTC-USDT-SWAP`.

The real venue serves spot and swaps from one host; the simulation runs them as two servers so
each can be given its own premium and outages.
"""

from __future__ import annotations

from oracle.sim.venues.okx import Okx


class OkxPerp(Okx):
    name = "okx_perp"
    inst_type = "SWAP"
    inst_suffix = "-SWAP"
