"""Chainlink price feeds behind an Ethereum JSON-RPC endpoint: `POST /` with `eth_call`.

A client calls an aggregator proxy's `latestRoundData()` (selector 0xfeaf968c) and gets five ABI
words: roundId (phase << 64 | round), answer (8 decimals), startedAt, updatedAt, answeredInRound.
`decimals()` (0x313ce567) answers 8. Batches, `eth_chainId` and `eth_blockNumber` are answered too;
an unknown method gets JSON-RPC error -32601.

Like a real aggregator, each feed writes rounds on its own, whoever reads it: it watches the market
(the median of its nodes: the true price with the venue's constant bias, no per-read noise) and
writes a new round when that is its deviation threshold away from its last answer, or when its
heartbeat has passed, with `updatedAt` the time of the round. Between rounds every read returns the
same round, for minutes in a calm market: that silence, and the lag it means, is what a fallback
tier of this kind really looks like. A read never writes a round (it only catches the feed up to
now), and an outage of the RPC endpoint does not stop the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from feeds.chainlink import abi_words  # the one ABI word encoder
from oracle.sim.venues.base import VenueServer, parse_json

DECIMALS = 8
PHASE = 6
LATEST_ROUND_DATA = "0xfeaf968c"
DECIMALS_SELECTOR = "0x313ce567"
BLOCK0 = 18_600_000
BLOCK_S = 12.0
WATCH_S = 0.05  # real seconds between the feeds' looks at the market (finer than a block: updatedAt is exact)


@dataclass(frozen=True, slots=True)
class Feed:
    address: str  # the mainnet proxy, checksummed as config/markd.toml writes it
    deviation: float  # relative move that triggers a new round
    heartbeat_s: float


FEEDS = {
    "BTC-USD": Feed("0xF4030086522a5bEEa4988F8cA5B36dbC97BeE88c", 0.005, 3600),
    "ETH-USD": Feed("0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419", 0.005, 3600),
    "SOL-USD": Feed("0x4ffC43a60e009B551865A93d232E33Fce9f01507", 0.005, 86400),
    "USDT-USD": Feed("0x3E7d1eAB13ad0104d2750B8863b489D65364e32D", 0.0025, 86400),
    "USDC-USD": Feed("0x8fFfFfd4AfB6115b954Bd326cbe7B4BA576818f6", 0.0025, 86400),
}


@dataclass(frozen=True, slots=True)
class Round:
    round_id: int
    answer: int
    updated_at: int


class Chainlink(VenueServer):
    name = "chainlink"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rounds: dict[str, Round] = {}
        self._t0 = self.clock.now()
        self._writer: asyncio.Task[None] | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/", self._rpc)]

    async def start(self) -> dict[str, str]:
        urls = await super().start()
        self.write_rounds()  # every feed has a round before the first read
        self._writer = asyncio.create_task(self._write_forever(), name="sim-chainlink-rounds")
        return urls

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await super().stop()

    async def _write_forever(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            self.write_rounds()

    def write_rounds(self) -> None:
        """Each feed looks at the market now and writes a round if one is due."""
        for pair in self.pairs:
            if pair in FEEDS:
                self._round(pair)

    async def _rpc(self, request: web.Request) -> web.Response:
        body = parse_json(await request.text())
        if isinstance(body, list):
            return web.json_response([self._answer(call) for call in body])
        return web.json_response(self._answer(body))

    def _answer(self, call: Any) -> dict[str, Any]:
        if not isinstance(call, dict) or "method" not in call:
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
        head = {"jsonrpc": "2.0", "id": call.get("id")}
        method, params = call["method"], call.get("params") or []
        if method == "eth_chainId":
            return {**head, "result": "0x1"}
        if method == "eth_blockNumber":
            return {**head, "result": hex(BLOCK0 + int((self.clock.now() - self._t0) / BLOCK_S))}
        if method == "eth_call" and params and isinstance(params[0], dict):
            return {
                **head,
                "result": self._call(str(params[0].get("to", "")), str(params[0].get("data", ""))),
            }
        return {
            **head,
            "error": {"code": -32601, "message": f"the method {method} does not exist/is not available"},
        }

    def _call(self, to: str, data: str) -> str:
        """Return data of a call; calling something that is not one of our feeds returns nothing."""
        pair = next((p for p in self.pairs if p in FEEDS and FEEDS[p].address.lower() == to.lower()), None)
        if pair is None:
            return "0x"
        if data.lower().startswith(DECIMALS_SELECTOR):
            return abi_words(DECIMALS)
        if data.lower().startswith(LATEST_ROUND_DATA):
            r = self._round(pair)
            return abi_words(r.round_id, r.answer, r.updated_at, r.updated_at, r.round_id)
        return "0x"

    def answer_now(self, pair: str) -> int:
        """What the feed's nodes report now: the true price with the venue's bias, in 8 decimals."""
        true = self.quoter.market.pair_price(pair)
        return round(true * (1.0 + self.spec.bias_bps * 1e-4) * 10**DECIMALS)

    def _round(self, pair: str) -> Round:
        """The feed's latest round, writing a new one first if the market moved past the feed's
        deviation threshold from its last answer, or its heartbeat has passed."""
        feed, now = FEEDS[pair], int(self.clock.now())
        answer = self.answer_now(pair)
        last = self._rounds.get(pair)
        if last is None:
            last = Round((PHASE << 64) | 8000, answer, now)
        elif abs(answer / last.answer - 1) >= feed.deviation or now - last.updated_at >= feed.heartbeat_s:
            last = Round(last.round_id + 1, answer, now)
        self._rounds[pair] = last
        return last
