"""Chainlink: JSON-RPC eth_call of latestRoundData() on SourceRef.address, over the source's base_url.

The answer is five ABI words of 32 bytes: roundId, answer (a signed int256), startedAt, updatedAt,
answeredInRound. The price is answer / 10^decimals. A round with answer <= 0 is bad_price; one
whose updatedAt is older than SourceRef.heartbeat_s, or that was answered in an earlier round, is
stale_venue_time: an aggregator that stopped updating must not look alive.
"""

from __future__ import annotations

import json
from typing import Any

from feeds.adapter import Adapter, ParseResult, Request, Row, about, obj, scaled, text
from feeds.errors import BadPrice, SchemaError, StaleVenueTime, VenueRejected

LATEST_ROUND_DATA = "0xfeaf968c"  # bytes4(keccak256("latestRoundData()"))
_WORD = 64  # hex digits in a 32-byte ABI word


def decode_round(result: str) -> tuple[int, int, int, int, int]:
    """(roundId, answer, startedAt, updatedAt, answeredInRound) from eth_call's hex result."""
    digits = result.removeprefix("0x")
    if len(digits) != 5 * _WORD:
        raise SchemaError(f"latestRoundData returned {len(digits)} hex digits, not {5 * _WORD}")
    try:
        words = [int(digits[i : i + _WORD], 16) for i in range(0, 5 * _WORD, _WORD)]
    except ValueError:
        raise SchemaError("latestRoundData result is not hex") from None
    round_id, answer, started_at, updated_at, answered_in = words
    if answer >= 2**255:  # two's complement: int256
        answer -= 2**256
    return round_id, answer, started_at, updated_at, answered_in


def abi_words(*values: int) -> str:
    """Values as consecutive 32-byte big-endian ABI words, two's complement for negatives: the one
    encoder, for the simulated node (oracle/sim/venues/chainlink.py) and tests."""
    return "0x" + "".join(f"{v % (1 << 256):0{_WORD}x}" for v in values)


def encode_round(round_id: int, answer: int, started_at: int, updated_at: int, answered_in: int) -> str:
    """The inverse of decode_round."""
    return abi_words(round_id, answer, started_at, updated_at, answered_in)


class Chainlink(Adapter):
    kind = "chainlink"
    rest_url = "https://ethereum-rpc.publicnode.com"

    def requests(self) -> list[Request]:
        # One call per feed: not every public node accepts JSON-RPC batches.
        return [
            Request(self.base_url, json=self._call(i, ref.address or ""), pairs=(pair,))
            for i, (pair, ref) in enumerate(self.refs.items())
        ]

    @staticmethod
    def _call(call_id: int, address: str) -> dict[str, Any]:
        params = [{"to": address, "data": LATEST_ROUND_DATA}, "latest"]
        return {"jsonrpc": "2.0", "id": call_id, "method": "eth_call", "params": params}

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        (pair,) = pairs
        return self.resolve([doc], lambda body: self._round(pair, body))

    def _round(self, pair: str, body: Any) -> Row:
        with about(pair):
            body = obj(body, "answer")
            if "error" in body:
                raise VenueRejected(f"JSON-RPC error {json.dumps(body['error'])[:200]}")
            round_id, answer, _, updated_at, answered_in = decode_round(text(body, "result"))
            if answer <= 0:
                raise BadPrice(f"answer {answer}")
            if answered_in < round_id:
                raise StaleVenueTime(f"round {round_id} carries the answer of round {answered_in}")
            decimals = self.refs[pair].decimals or 0
            return self.book(pair, last=scaled(answer, -decimals), venue_ts=float(updated_at))
