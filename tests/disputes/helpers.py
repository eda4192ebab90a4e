"""Builders for the dispute tests: a small config and candidates with chosen tier prices."""

from __future__ import annotations

import math
from typing import Any

from disputes.model import Decision
from oracle.models import Candidate, Excluded, TierResult
from oracle.settings import Settings
from oracle.validation.stage import DisputeStage

MARKET = "BTC-USD"


def make_settings(**policy: Any) -> Settings:
    base = {
        "max_deviation_bps": 150,
        "max_jump_bps": 1000,
        "dispute_window_ms": 10_000,
        "heartbeat_ms": 1000,
        "recover_ticks": 3,
        "anchor_window_s": 3600,
        "anchor_deviation_bps": 2000,
        "min_sources": 3,
    }
    names = ("coinbase", "kraken", "bitstamp", "pyth", "chainlink", "redstone")
    return Settings.model_validate(
        {
            "policy": {**base, **policy},
            "sources": {n: {"kind": "coinbase"} for n in names},
            "markets": {
                m: {
                    "sources": [{"source": n, "pair": m} for n in names[:3]],
                    "fallback": [{"source": n, "pair": m} for n in names[3:]],
                }
                for m in (MARKET, "ETH-USD")
            },
        }
    )


def tier(n: int, price: float | None) -> TierResult:
    """A tier result; `None` means the tier has no quorum."""
    sources = ("coinbase", "kraken", "bitstamp") if n == 1 else ("pyth", "chainlink", "redstone")
    if price is None:
        return TierResult(n, math.nan, math.nan, (), False)
    return TierResult(n, price, price * 1e-4, sources, True)


def cand(
    t1: float | None,
    t2: float | None = None,
    *,
    ts: float = 0.0,
    market: str = MARKET,
    excluded: tuple[Excluded, ...] = (),
) -> Candidate:
    return Candidate(market, ts, (tier(1, t1), tier(2, t2)), excluded)


def run(stage: DisputeStage, t1: float | None, t2: float | None, now: float, **kw: Any) -> Decision:
    return stage.process(cand(t1, t2, ts=now, **kw), now)
