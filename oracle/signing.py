"""Signed marks: so the margin engine can refuse a mark that markd did not write.

What is signed (DESIGN.md, "Signed marks") is the UTF-8 bytes of

    market \\n price \\n confidence \\n ts_ms \\n seq \\n status \\n tier \\n sources

with every field exactly the string stored in the mark hash. Two algorithms, configured on both sides
(a verifier never takes the algorithm from the mark, or an Ed25519 public key could serve as an HMAC
key):
- `hmac-sha256`: a shared 32-byte secret. Stops a writer that has Redis access but not the key; every
  verifier holds the key, so a verifier could sign too.
- `ed25519`: markd holds the private seed, verifiers only the public key. Also stops a verifier (or
  whoever steals a verifier's key) from signing.

`kid` (the first 16 hex digits of SHA-256 of the verifying key) names the key on every mark, so a
reader that knows several keys picks the right one while a key is being rotated.

Key material lives in `Signer` and `Verifier` only, whose repr shows the algorithm and kid: a key
never reaches a log line, a metric or `check-config` output.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from oracle.schema import PERP_FIELDS
from oracle.settings import ConfigError, Settings, SigningAlgorithm

__all__ = [
    "ALGORITHMS",
    "KEY_BYTES",
    "Signer",
    "SigningKeyError",
    "Verifier",
    "generate_key",
    "key_id",
    "mark_payload",
    "parse_key",
    "perp_payload",
    "read_key",
    "signer_from_settings",
    "write_key",
]

ALGORITHMS: tuple[str, ...] = get_args(SigningAlgorithm)
KEY_BYTES = 32
SIGNED_FIELDS = ("price", "confidence", "ts_ms", "seq", "status", "tier", "sources")


class SigningKeyError(ValueError):
    """Key material that cannot be used; the message never holds the key."""


def mark_payload(market: str, fields: Mapping[str, object]) -> bytes:
    """The signed bytes of a mark whose fields are as stored (hash strings, or a message's values
    written with the same characters). KeyError when a field is missing."""
    return "\n".join([market, *(str(fields[f]) for f in SIGNED_FIELDS)]).encode()


def perp_payload(market: str, fields: Mapping[str, object]) -> bytes:
    """The signed bytes of a perp mark whose fields are as stored (`market \\n price \\n index \\n c1 \\n
    c2 \\n c3 \\n ts_ms \\n seq \\n status`). KeyError when a field is missing."""
    return "\n".join([market, *(str(fields[f]) for f in PERP_FIELDS)]).encode()


def key_id(verifying_key: bytes) -> str:
    return hashlib.sha256(verifying_key).hexdigest()[:16]


class Signer:
    """Signs payloads with the secret key of `algorithm`."""

    def __init__(self, algorithm: str, secret: bytes) -> None:
        _check(algorithm, secret, "signing key")
        self.algorithm = algorithm
        self._secret = secret
        if algorithm == "ed25519":
            self._ed25519: Ed25519PrivateKey | None = Ed25519PrivateKey.from_private_bytes(secret)
            self.verifying_key = self._ed25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        else:
            self._ed25519 = None
            self._hmac = hmac.new(secret, digestmod=hashlib.sha256)  # copied per mark: no key setup each time
            self.verifying_key = secret
        self.kid = key_id(self.verifying_key)

    def __repr__(self) -> str:
        return f"Signer({self.algorithm}, kid={self.kid})"

    def sign(self, payload: bytes) -> str:
        if self._ed25519 is not None:
            return self._ed25519.sign(payload).hex()
        mac = self._hmac.copy()
        mac.update(payload)
        return mac.hexdigest()


class Verifier:
    """Checks signatures with the verifying key of `algorithm` (the HMAC key, or the Ed25519 public key)."""

    def __init__(self, algorithm: str, verifying_key: bytes) -> None:
        _check(algorithm, verifying_key, "verifying key")
        self.algorithm = algorithm
        self.kid = key_id(verifying_key)
        self._key = verifying_key
        self._public = Ed25519PublicKey.from_public_bytes(verifying_key) if algorithm == "ed25519" else None

    def __repr__(self) -> str:
        return f"Verifier({self.algorithm}, kid={self.kid})"

    def verify(self, payload: bytes, sig: str) -> bool:
        try:
            raw = bytes.fromhex(sig)
        except ValueError:
            return False
        if self._public is None:
            return hmac.compare_digest(hmac.digest(self._key, payload, "sha256"), raw)
        try:
            self._public.verify(raw, payload)
        except InvalidSignature:
            return False
        return True


def _check(algorithm: str, key: bytes, what: str) -> None:
    if algorithm not in ALGORITHMS:
        raise SigningKeyError(f"unknown algorithm {algorithm!r} (one of {', '.join(ALGORITHMS)})")
    if len(key) != KEY_BYTES:
        raise SigningKeyError(f"the {what} must be {KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits), not {len(key)}")


def parse_key(text: str) -> bytes:
    """Key bytes from hex text (surrounding whitespace ignored); SigningKeyError without echoing it."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise SigningKeyError("not hex (expected 64 hex digits)") from None
    if len(key) != KEY_BYTES:
        raise SigningKeyError(f"expected {KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits), found {len(key)}")
    return key


def read_key(path: str | Path) -> bytes:
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise SigningKeyError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"{p}: cannot read ({getattr(exc, 'strerror', None) or 'not hex text'})") from None
    try:
        return parse_key(text)
    except SigningKeyError as exc:
        raise SigningKeyError(f"{p}: {exc}") from None


def signer_from_settings(settings: Settings) -> Signer | None:
    """The daemon's signer: from $MARKD_SIGNING_KEY, else `signing.key_file`, else None (unsigned).
    ConfigError naming the key path when the key cannot be used."""
    algorithm = settings.signing.algorithm
    try:
        if settings.signing_key is not None:
            where = "MARKD_SIGNING_KEY"
            return Signer(algorithm, parse_key(settings.signing_key.get_secret_value()))
        if settings.signing.key_file:
            where = "signing.key_file"
            return Signer(algorithm, read_key(settings.signing.key_file))
    except SigningKeyError as exc:
        raise ConfigError([f"{where}: {exc}"]) from None
    return None


def generate_key(algorithm: str) -> Signer:
    """A new random key for `algorithm` (the secret is `write_key`'s to store)."""
    return Signer(algorithm, secrets.token_bytes(KEY_BYTES))


def write_key(signer: Signer, path: str | Path) -> None:
    """The signer's secret as hex into a new file of mode 0600; never overwrites an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(signer._secret.hex() + "\n")
