"""`markd keygen`, `markd marks --verify-key`, and the signing key in the config: it must be usable,
and never shows in `check-config` output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_py

from oracle.cli import main
from oracle.settings import RedisSettings
from oracle.signing import Signer, read_key
from tests.publish.helpers import mark, publisher
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "config" / "markd.toml"


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "ed25519"])
def test_keygen_writes_a_0600_key_and_prints_only_the_public_half(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithm: str
) -> None:
    out = tmp_path / "markd.key"
    assert main(["keygen", "--algorithm", algorithm, "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    secret = read_key(out)
    signer = Signer(algorithm, secret)
    printed = capsys.readouterr()
    assert secret.hex() not in printed.out + printed.err
    assert signer.kid in printed.err
    if algorithm == "ed25519":
        assert printed.out.strip() == signer.verifying_key.hex()  # save it as the verifiers' key file
    else:
        assert printed.out == ""  # the HMAC key is its own verifying key: a secret, never printed


def test_keygen_never_overwrites_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "markd.key"
    out.write_text("precious\n")
    assert main(["keygen", "--out", str(out)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert out.read_text() == "precious\n"


async def _publish_two(settings: RedisSettings, signer: Signer) -> None:
    pub = publisher(settings, signer=signer)
    try:
        assert await pub.publish([mark("BTC-USD"), mark("ETH-USD")])
    finally:
        await pub.close()


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "ed25519"])
async def test_marks_with_verify_key_shows_a_tampered_market_as_forged(
    tmp_path: Path, redis_server: RedisServer, settings: RedisSettings, algorithm: str
) -> None:
    key = tmp_path / "markd.key"
    assert main(["keygen", "--algorithm", algorithm, "--out", str(key)]) == 0
    signer = Signer(algorithm, read_key(key))
    verify = tmp_path / "verify.hex"
    verify.write_text(signer.verifying_key.hex() + "\n")
    await _publish_two(settings, signer)
    client = redis_py.Redis.from_url(redis_server.url, decode_responses=True)
    client.hset(f"{settings.prefix}:{{ETH-USD}}:mark", "price", "1.0")
    client.close()
    args = ["marks", "--redis", redis_server.url, "--prefix", settings.prefix, "--verify-key", str(verify)]
    proc = subprocess.run(
        [sys.executable, "-m", "oracle", *args, "--algorithm", algorithm],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert rows["ETH-USD"][3] == "FORGED"
    assert rows["BTC-USD"][3] == "ok" and rows["BTC-USD"][1] == "65000.50"  # at the market's precision


def test_marks_with_an_unusable_verify_key_exits_2_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "short.hex"
    bad.write_text("abcdef0123\n")
    assert main(["marks", "--verify-key", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--verify-key" in err and "32 bytes" in err and "abcdef0123" not in err
    assert main(["marks", "--verify-key", str(tmp_path / "absent")]) == 2
    assert "no such file" in capsys.readouterr().err


def _check_config(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MARKD_")}
    return subprocess.run(
        [sys.executable, "-m", "oracle", "check-config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
    )


def test_check_config_shows_the_signing_kid_never_the_key(tmp_path: Path) -> None:
    key = tmp_path / "markd.key"
    assert main(["keygen", "--algorithm", "ed25519", "--out", str(key)]) == 0
    config = tmp_path / "markd.toml"
    config.write_text(
        PRODUCTION.read_text().replace('algorithm = "hmac-sha256"', 'algorithm = "ed25519"')
        .replace('key_file = ""', f'key_file = "{key}"')
    )  # fmt: skip
    secret = read_key(key).hex()
    proc = _check_config(config)
    assert proc.returncode == 0, proc.stderr
    signing = json.loads(proc.stdout)["signing"]
    assert signing == {"algorithm": "ed25519", "key_file": str(key), "key": "key_file",
                       "kid": Signer("ed25519", read_key(key)).kid}  # fmt: skip
    env_key = "11" * 32
    proc = _check_config(config, MARKD_SIGNING_KEY=env_key)  # the environment wins over key_file
    assert json.loads(proc.stdout)["signing"]["kid"] == Signer("ed25519", bytes.fromhex(env_key)).kid
    for text in (proc.stdout + proc.stderr,):
        assert secret not in text and env_key not in text


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "no such file"), ("zz" * 32, "not hex"), ("ab" * 16, "found 16")],
)
def test_an_unusable_signing_key_is_a_config_error_naming_its_key(
    tmp_path: Path, content: str | None, says: str
) -> None:
    key = tmp_path / "markd.key"
    if content is not None:
        key.write_text(content)
    proc = _check_config(PRODUCTION, MARKD_SIGNING__KEY_FILE=str(key))
    assert proc.returncode == 2
    assert "signing.key_file" in proc.stderr and says in proc.stderr and "Traceback" not in proc.stderr
    if content is not None:
        assert content not in proc.stderr
    bad_env = _check_config(PRODUCTION, MARKD_SIGNING_KEY="not-a-key")
    assert bad_env.returncode == 2 and "MARKD_SIGNING_KEY: not hex" in bad_env.stderr
