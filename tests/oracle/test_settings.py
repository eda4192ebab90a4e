"""The configuration contract: what loads, what is refused (each problem naming its key), overrides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oracle.cli import main
from oracle.settings import ConfigError, Policy, load_settings, parse_settings

from .helpers import config, refs

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "config" / "markd.toml"

BASE = """\
[policy]
min_sources = 2
max_age_ms = 4000

[sources.coinbase]
kind = "coinbase"

[sources.kraken]
kind = "kraken"

[sources.binance]
kind = "binance"

[sources.pyth]
kind = "pyth"

[sources.chainlink]
kind = "chainlink"

[markets.USDT-USD]
sources = [
  { source = "coinbase", pair = "USDT-USD" },
  { source = "kraken", pair = "USDT-USD" },
]

[markets.BTC-USD]
sources = [
  { source = "coinbase", pair = "BTC-USD" },
  { source = "kraken", pair = "BTC-USD" },
  { source = "binance", pair = "BTC-USDT", convert = "USDT-USD" },
]
fallback = [
  { source = "pyth", pair = "BTC-USD", id = "e62d" },
  { source = "chainlink", pair = "BTC-USD", address = "0xF403", decimals = 8, heartbeat_s = 3600 },
]
max_deviation_bps = 100
"""


def check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str, list[str]]:
    """Run `markd check-config` in-process on `text`; return (exit code, stdout, stderr lines)."""
    path = tmp_path / "markd.toml"
    path.write_text(text)
    rc = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err.splitlines()


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> list[str]:
    """The problems check-config reports for `text`, after asserting exit 2, no output, no traceback."""
    rc, out, err = check_config(tmp_path, capsys, text)
    assert rc == 2
    assert out == ""
    assert not any("Traceback" in line for line in err)
    assert all(line.startswith("config error: ") for line in err), err
    return [line.removeprefix("config error: ") for line in err]


# --- what loads ----------------------------------------------------------------------------------


def test_production_config_loads() -> None:
    s = load_settings(PRODUCTION)
    assert list(s.markets) == ["USDT-USD", "USDC-USD", "BTC-USD", "ETH-USD", "SOL-USD"]
    assert s.policy_for("BTC-USD").max_deviation_bps == 100
    assert s.policy_for("USDT-USD").min_sources == 2
    assert s.market_levels() == [["USDT-USD"], ["USDC-USD", "BTC-USD", "ETH-USD", "SOL-USD"]]


def test_check_config_of_production_config_exits_0_printing_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(PRODUCTION)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    data = json.loads(out)
    assert data["market_order"] == ["USDT-USD", "USDC-USD", "BTC-USD", "ETH-USD", "SOL-USD"]
    assert data["markets"]["BTC-USD"]["policy"]["max_deviation_bps"] == 100.0
    assert data["markets"]["BTC-USD"]["policy"]["min_sources"] == 3
    assert data["markets"]["BTC-USD"]["tiers"][1][0] == {
        "source": "pyth",
        "pair": "BTC-USD",
        "id": "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43",
    }
    assert data["dispute_token"] == "unset"
    # Each source's freeze threshold, resolved (oracle/freeze.py): set for chainlink, by kind elsewhere.
    assert {n: src["freeze_bps"] for n, src in data["sources"].items() if n in ("chainlink", "pyth", "okx")} == {
        "chainlink": 100.0,
        "pyth": 25.0,
        "okx": 25.0,
    }


def test_check_config_as_a_real_subprocess_exits_0_printing_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "oracle", "check-config", str(PRODUCTION)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout)["redis"] == {
        "url": "redis://127.0.0.1:6379/0",
        "prefix": "markd",
        "history_maxlen": 100000,
        "cluster": False,
        "sentinels": [],
        "sentinel_service": "markd",
    }


def test_check_config_error_as_a_real_subprocess_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BASE.replace("max_deviation_bps = 100", "max_deviaton_bps = 100"))
    proc = subprocess.run(
        [sys.executable, "-m", "oracle", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "config error: markets.BTC-USD.max_deviaton_bps: unknown key (typo?)\n"


def test_base_test_config_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = check_config(tmp_path, capsys, BASE)
    assert (rc, err) == (0, [])
    assert json.loads(out)["market_order"] == ["USDT-USD", "BTC-USD"]


# --- each problem is refused, naming its key path --------------------------------------------------

CYCLE2 = """
[markets.A-USD]
sources = [{ source = "coinbase", pair = "A-B", convert = "B-USD" }]
min_sources = 1
[markets.B-USD]
sources = [{ source = "coinbase", pair = "B-A", convert = "A-USD" }]
min_sources = 1
"""
CYCLE3 = """
[markets.A-USD]
sources = [{ source = "coinbase", pair = "A-B", convert = "B-USD" }]
min_sources = 1
[markets.B-USD]
sources = [{ source = "coinbase", pair = "B-C", convert = "C-USD" }]
min_sources = 1
[markets.C-USD]
sources = [{ source = "coinbase", pair = "C-A", convert = "A-USD" }]
min_sources = 1
"""

CASES = {
    "typo_in_top_level_section": (
        BASE + '\n[notfy]\nurl = ""\n',
        ["notfy: unknown key (typo?)"],
    ),
    "typo_in_policy": (
        BASE.replace("max_age_ms = 4000", "max_agems = 4000"),
        ["policy.max_agems: unknown key (typo?)"],
    ),
    "typo_in_market": (
        BASE.replace("max_deviation_bps = 100", "max_deviaton_bps = 100"),
        ["markets.BTC-USD.max_deviaton_bps: unknown key (typo?)"],
    ),
    "typo_in_source_entry": (
        BASE.replace('pair = "BTC-USDT", convert', 'pair = "BTC-USDT", convrt'),
        ["markets.BTC-USD.sources[2].convrt: unknown key (typo?)"],
    ),
    "typo_in_source_table": (
        BASE.replace('kind = "kraken"', 'kind = "kraken"\nwieght = 2.0'),
        ["sources.kraken.wieght: unknown key (typo?)"],
    ),
    "bad_type": (
        BASE.replace("max_age_ms = 4000", 'max_age_ms = "soon"'),
        ["policy.max_age_ms: Input should be a valid integer, unable to parse string as an integer"],
    ),
    "bad_enum": (
        BASE.replace("min_sources = 2\n", 'min_sources = 2\nmethod = "mean"\n'),
        ["policy.method: Input should be 'median', 'weighted_median' or 'trimmed_mean'"],
    ),
    "convert_cycle_of_2_markets": (
        BASE + CYCLE2,
        ["markets.A-USD: convert cycle A-USD -> B-USD -> A-USD"],
    ),
    "convert_cycle_of_3_markets": (
        BASE + CYCLE3,
        ["markets.A-USD: convert cycle A-USD -> B-USD -> C-USD -> A-USD"],
    ),
    "convert_through_itself": (
        BASE.replace('convert = "USDT-USD"', 'convert = "BTC-USD"'),
        ["markets.BTC-USD.sources[2].convert: a market cannot convert through itself"],
    ),
    "market_naming_an_undefined_source": (
        BASE.replace('{ source = "kraken", pair = "BTC-USD" }', '{ source = "krakn", pair = "BTC-USD" }'),
        ["markets.BTC-USD.sources[1].source: 'krakn' is not defined under [sources]"],
    ),
    "convert_naming_an_unknown_market": (
        BASE.replace('convert = "USDT-USD"', 'convert = "USDC-USD"'),
        ["markets.BTC-USD.sources[2].convert: 'USDC-USD' is not a market"],
    ),
    "min_sources_above_tier_1_size": (
        BASE.replace("max_deviation_bps = 100", "min_sources = 4"),
        ["markets.BTC-USD.min_sources: 4 exceeds the 3 sources of tier 1, so it could never reach quorum"],
    ),
    "policy_min_sources_above_a_tier_1_size": (
        BASE.replace("min_sources = 2", "min_sources = 3"),
        ["markets.USDT-USD.min_sources: 3 exceeds the 2 sources of tier 1, so it could never reach quorum"],
    ),
    "policy_trim_of_one_half": (
        BASE.replace("min_sources = 2\n", "min_sources = 2\ntrim = 0.5\n"),
        ["policy.trim: Input should be less than 0.5"],
    ),
    "policy_trim_negative": (
        BASE.replace("min_sources = 2\n", "min_sources = 2\ntrim = -0.1\n"),
        ["policy.trim: Input should be greater than or equal to 0"],
    ),
    "market_trim_of_one_half": (
        BASE.replace("max_deviation_bps = 100", "trim = 0.5"),
        ["markets.BTC-USD.trim: Input should be less than 0.5"],
    ),
    "market_trim_negative": (
        BASE.replace("max_deviation_bps = 100", "trim = -0.01"),
        ["markets.BTC-USD.trim: Input should be greater than or equal to 0"],
    ),
    "negative_max_age_ms": (
        BASE.replace("max_age_ms = 4000", "max_age_ms = -1"),
        ["policy.max_age_ms: Input should be greater than or equal to 0"],
    ),
    "negative_dispute_window_ms": (
        BASE.replace("min_sources = 2\n", "min_sources = 2\ndispute_window_ms = -10\n"),
        ["policy.dispute_window_ms: Input should be greater than or equal to 0"],
    ),
    "negative_heartbeat_ms_in_a_market": (
        BASE.replace("max_deviation_bps = 100", "heartbeat_ms = -1"),
        ["markets.BTC-USD.heartbeat_ms: Input should be greater than or equal to 0"],
    ),
    "negative_anchor_window_s": (
        BASE.replace("min_sources = 2\n", "min_sources = 2\nanchor_window_s = -1.5\n"),
        ["policy.anchor_window_s: Input should be greater than or equal to 0"],
    ),
    "missing_pyth_id": (
        BASE.replace(', id = "e62d"', ""),
        ["markets.BTC-USD.fallback[0].id: required for a pyth source"],
    ),
    "missing_chainlink_address": (
        BASE.replace('address = "0xF403", ', ""),
        ["markets.BTC-USD.fallback[1].address: required for a chainlink source"],
    ),
    "invalid_toml": (
        BASE.replace("[markets.BTC-USD]", "[markets.BTC-USD"),
        None,  # the message names the file: checked below
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_config_error_exits_2_naming_its_key(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = CASES[case]
    problems = refused(tmp_path, capsys, text)
    if expected is None:
        assert len(problems) == 1
        assert problems[0].startswith(f"{tmp_path / 'markd.toml'}: not valid TOML (")
    else:
        assert problems == expected


def test_missing_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere.toml"
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"config error: {path}: no such file\n")


def test_several_errors_in_one_file_are_all_reported_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        BASE.replace("[policy]", "[policy]\nmax_agee_ms = 1")
        .replace("max_deviation_bps = 100", "trim = 0.7")
        .replace(', id = "e62d"', "")
        .replace('convert = "USDT-USD"', 'convert = "USDC-USD"')
        .replace('kind = "kraken"', 'kind = "krakken"')
    )
    assert sorted(refused(tmp_path, capsys, text)) == [
        "markets.BTC-USD.fallback[0].id: required for a pyth source",
        "markets.BTC-USD.sources[2].convert: 'USDC-USD' is not a market",
        "markets.BTC-USD.trim: Input should be less than 0.5",
        "policy.max_agee_ms: unknown key (typo?)",
        "sources.kraken.kind: Input should be 'binance', 'coinbase', 'kraken', 'okx', 'bybit', "
        "'bitstamp', 'pyth', 'chainlink', 'http_json' or 'redis_hash'",
    ]


def test_problems_in_valid_keys_are_not_invented_by_an_invalid_policy_key() -> None:
    # [policy] min_sources = 2 is valid; an invalid trim beside it must not revert it to the default 3
    with pytest.raises(ConfigError) as err:
        config({"A-USD": {"sources": refs("ab", "A-USD")}}, min_sources=2, trim=0.7)
    assert err.value.problems == ["policy.trim: Input should be less than 0.5"]


def test_convert_into_an_invalid_market_reports_only_that_market() -> None:
    with pytest.raises(ConfigError) as err:
        config(
            {
                "A-USD": {"sources": refs(["a"], "A-B", convert="B-USD")},
                "B-USD": {"sources": refs(["a"], "B-USD"), "max_agge_ms": 5},
            },
            min_sources=1,
        )
    assert err.value.problems == ["markets.B-USD.max_agge_ms: unknown key (typo?)"]


def test_every_convert_cycle_is_reported() -> None:
    def m(conv: str) -> dict[str, object]:
        return {"sources": refs(["a"], "X-Y", convert=conv)}

    with pytest.raises(ConfigError) as err:
        config(
            {"A-USD": m("B-USD"), "B-USD": m("A-USD"), "C-USD": m("D-USD"), "D-USD": m("C-USD")},
            min_sources=1,
        )
    assert err.value.problems == [
        "markets.A-USD: convert cycle A-USD -> B-USD -> A-USD",
        "markets.C-USD: convert cycle C-USD -> D-USD -> C-USD",
    ]


def test_config_error_carries_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        config({"X-USD": {"sources": refs(["nope"]), "min_sources": 2, "fallback": refs(["a"], convert="Z")}})
    assert err.value.problems == [
        "markets.X-USD.sources[0].source: 'nope' is not defined under [sources]",
        "markets.X-USD.fallback[0].convert: 'Z' is not a market",
        "markets.X-USD.min_sources: 2 exceeds the 1 sources of tier 1, so it could never reach quorum",
    ]
    assert str(err.value) == "\n".join(err.value.problems)


def test_markets_are_required() -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"sources": {"a": {"kind": "okx"}}})
    assert err.value.problems == ["markets: Field required"]


def test_dispute_token_is_refused_in_the_file() -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"dispute_token": "x", "markets": {}})
    assert err.value.problems == ["dispute_token: set it with the MARKD_DISPUTE_TOKEN environment variable"]


# --- resolution --------------------------------------------------------------------------------------


def test_market_overrides_of_policy_resolve() -> None:
    s = config(
        {
            "A-USD": {"sources": refs("abc", "A-USD"), "max_deviation_bps": 40, "method": "trimmed_mean"},
            "B-USD": {"sources": refs("abc", "B-USD"), "trim": 0.1, "max_age_ms": 0},
        },
        max_age_ms=3000,
        max_deviation_bps=200,
        min_sources=3,
    )
    assert s.policy_for("A-USD") == Policy(max_age_ms=3000, max_deviation_bps=40, min_sources=3, method="trimmed_mean")
    assert s.policy_for("B-USD") == Policy(max_age_ms=0, max_deviation_bps=200, min_sources=3, trim=0.1)
    assert s.policy == Policy(max_age_ms=3000, max_deviation_bps=200, min_sources=3)


def test_a_resolved_policy_is_kept_and_follows_a_copy_with_a_new_base_or_market() -> None:
    s = config({"A-USD": {"sources": refs("abc", "A-USD"), "max_deviation_bps": 40}}, max_jump_bps=500)
    first = s.policy_for("A-USD")
    assert s.policy_for("A-USD") is first  # resolved once: a reload of 1,000 markets asks thousands of times

    # A copy shares the cache; it must not hand out the old base's or the old market's policy.
    rebased = s.model_copy(update={"policy": s.policy.model_copy(update={"max_jump_bps": 700.0})})
    assert rebased.policy_for("A-USD").max_jump_bps == 700
    market = s.markets["A-USD"].model_copy(update={"max_deviation_bps": 25.0})
    retuned = s.model_copy(update={"markets": {"A-USD": market}})
    assert retuned.policy_for("A-USD").max_deviation_bps == 25
    assert s.policy_for("A-USD") == first and first.max_jump_bps == 500 and first.max_deviation_bps == 40


def test_market_override_is_checked_against_the_policy() -> None:
    with pytest.raises(ConfigError) as err:
        config({"A-USD": {"sources": refs("abc", "A-USD"), "min_price": 5.0}}, max_price=2.0)
    assert err.value.problems == ["markets.A-USD: min_price (5.0) must be below max_price (2.0)"]


def test_market_order_and_levels_follow_convert_dependencies() -> None:
    s = config(
        {
            "C-USD": {"sources": refs(["a"], "C-B", convert="B-USD"), "min_sources": 1},
            "B-USD": {"sources": refs(["a"], "B-A", convert="A-USD"), "min_sources": 1},
            "D-USD": {"sources": refs(["a"], "D-USD"), "min_sources": 1},
            "A-USD": {"sources": refs(["a"], "A-USD"), "min_sources": 1},
            "E-USD": {"sources": refs(["a"], "E-USD"), "fallback": refs(["b"], "E-A", convert="A-USD")},
        },
        min_sources=1,
    )
    assert s.market_order() == ["A-USD", "B-USD", "C-USD", "D-USD", "E-USD"]
    assert s.market_levels() == [["A-USD", "D-USD"], ["B-USD", "E-USD"], ["C-USD"]]


# --- environment overrides ----------------------------------------------------------------------------


def _base_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "markd.toml"
    path.write_text(BASE)
    return load_settings(path)


def test_env_redis_url_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_REDIS_URL", "rediss://cache.internal:6380/2")
    assert _base_settings(tmp_path).redis.url == "rediss://cache.internal:6380/2"


def test_env_http_port_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_HTTP_PORT", "9200")
    assert _base_settings(tmp_path).service.http_port == 9200


def test_env_bad_http_port_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_HTTP_PORT", "70000")
    with pytest.raises(ConfigError) as err:
        _base_settings(tmp_path)
    assert err.value.problems == [
        "service.http_port: Input should be less than or equal to 65535 (from MARKD_HTTP_PORT)"
    ]


def test_env_policy_key_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_POLICY__MAX_AGE_MS", "1234")
    s = _base_settings(tmp_path)
    assert s.policy.max_age_ms == 1234
    assert s.policy_for("BTC-USD").max_age_ms == 1234
    assert s.policy.min_sources == 2  # the rest of [policy] still comes from the file


def test_env_market_key_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_MARKETS__BTC-USD__MIN_SOURCES", "3")
    s = _base_settings(tmp_path)
    assert s.policy_for("BTC-USD").min_sources == 3
    assert s.policy_for("USDT-USD").min_sources == 2
    assert [r.source for r in s.markets["BTC-USD"].sources] == ["coinbase", "kraken", "binance"]


def test_env_market_override_is_cross_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_MARKETS__BTC-USD__MIN_SOURCES", "4")
    with pytest.raises(ConfigError) as err:
        _base_settings(tmp_path)
    assert err.value.problems == [
        "markets.BTC-USD.min_sources: 4 exceeds the 3 sources of tier 1, so it could never reach quorum"
        " (from MARKD_MARKETS__BTC-USD__MIN_SOURCES)"
    ]


def test_env_typo_key_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_POLICY__MAX_AGE", "1000")
    with pytest.raises(ConfigError) as err:
        _base_settings(tmp_path)
    assert err.value.problems == ["policy.max_age: unknown key (typo?) (from MARKD_POLICY__MAX_AGE)"]


def test_env_typo_section_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_POLCY__MAX_AGE_MS", "1000")
    with pytest.raises(ConfigError) as err:
        _base_settings(tmp_path)
    assert err.value.problems == ["polcy: unknown key (typo?)"]


def test_env_dispute_token_is_secret_and_reported_as_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKD_DISPUTE_TOKEN", "t0ps3cret")
    rc, out, err = check_config(tmp_path, capsys, BASE)
    assert (rc, err) == (0, [])
    assert json.loads(out)["dispute_token"] == "set"
    assert "t0ps3cret" not in out


def test_redis_password_is_redacted_in_check_config_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKD_REDIS_URL", "redis://oracle:hunter2@10.0.0.5:6380/1")
    rc, out, err = check_config(tmp_path, capsys, BASE)
    assert (rc, err) == (0, [])
    assert json.loads(out)["redis"]["url"] == "redis://oracle:***@10.0.0.5:6380/1"
    assert "hunter2" not in out


def test_redis_password_without_user_is_redacted_in_check_config_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE + '\n[redis]\nurl = "rediss://:hunter2@cache:6379/0"\n'
    rc, out, err = check_config(tmp_path, capsys, text)
    assert (rc, err) == (0, [])
    assert json.loads(out)["redis"]["url"] == "rediss://:***@cache:6379/0"
    assert "hunter2" not in out


# --- edge cases: one clear message per problem, exit 2 and no traceback ----------------------------------


@pytest.mark.parametrize(
    ("fallback", "problem"),
    [
        ([{"source": "a", "pair": "X-Y", "idd": "x"}], "markets.X-USD.fallback[0].idd: unknown key (typo?)"),
        (
            [[{"source": "a", "pair": "X-Y", "idd": "x"}]],
            "markets.X-USD.fallback[0][0].idd: unknown key (typo?)",
        ),
        ("a", "markets.X-USD.fallback: Input should be a valid list"),
    ],
    ids=["one_tier", "list_of_tiers", "not_a_list"],
)
def test_typo_in_a_fallback_entry_gives_one_message(fallback: object, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        config({"X-USD": {"sources": refs("abc"), "fallback": fallback}})
    assert err.value.problems == [problem]


def test_env_override_of_an_undefined_market_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_MARKETS__ETH-USD__MIN_SOURCES", "2")  # no such market in the file
    with pytest.raises(ConfigError) as err:
        _base_settings(tmp_path)
    assert err.value.problems == ["MARKD_MARKETS__ETH-USD__MIN_SOURCES: no market 'ETH-USD' in the config file"]


def test_bad_redis_url_is_refused_without_echoing_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE + '\n[redis]\nurl = "http://oracle:hunter2@cache:6379/0"\n'
    problems = refused(tmp_path, capsys, text)
    assert problems == ["redis.url: must start with redis://, rediss:// or unix://"]
    assert "hunter2" not in problems[0]


def test_a_cycle_is_reported_with_field_errors_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.replace("max_deviation_bps = 100", "max_deviaton_bps = 100") + CYCLE2
    assert refused(tmp_path, capsys, text) == [
        "markets.BTC-USD.max_deviaton_bps: unknown key (typo?)",
        "markets.A-USD: convert cycle A-USD -> B-USD -> A-USD",
    ]


def test_missing_http_json_path_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        config(
            {"X-USD": {"sources": refs(["j"])}}, {"j": {"kind": "http_json", "base_url": "http://h/p"}}, min_sources=1
        )
    assert err.value.problems == [
        "markets.X-USD.sources[0].path: required for a http_json source (or last_path, or bid_path with ask_path)"
    ]


def test_same_source_and_pair_twice_in_a_tier_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        config({"X-USD": {"sources": refs("aba")}}, min_sources=1)
    assert err.value.problems == ["markets.X-USD.sources[2]: a BTC-USD appears twice in one tier"]


@pytest.mark.parametrize(
    ("var", "problem"),
    [
        (
            "MARKD_POLICY__MAX_AGE_MS__X",
            "policy.max_age_ms: not a table, so MARKD_POLICY__MAX_AGE_MS__X cannot set a key in it",
        ),
        (
            "MARKD_MARKETS__BTC-USD__SOURCES__0__PAIR",
            "markets.BTC-USD.sources: not a table, so MARKD_MARKETS__BTC-USD__SOURCES__0__PAIR cannot set a key in it",
        ),
    ],
)
def test_env_key_below_a_value_exits_2_without_traceback(
    var: str,
    problem: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(var, "1")
    assert refused(tmp_path, capsys, BASE) == [problem]


def test_env_key_below_a_scalar_section_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKD_POLICY__MAX_AGE_MS", "1")
    text = "policy = 5\n" + BASE.replace("[policy]\nmin_sources = 2\nmax_age_ms = 4000\n", "")
    assert refused(tmp_path, capsys, text) == [
        "policy: not a table, so MARKD_POLICY__MAX_AGE_MS cannot set a key in it"
    ]


def test_unreadable_config_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path)]) == 2  # a directory
    assert capsys.readouterr() == ("", f"config error: {tmp_path}: cannot read (Is a directory)\n")
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b"# caf\xe9\n")
    assert main(["check-config", str(binary)]) == 2
    assert capsys.readouterr() == ("", f"config error: {binary}: not UTF-8 text\n")


@pytest.mark.parametrize("argv", [[], ["check-config"], ["check-config", "a.toml", "b.toml"], ["frobnicate"]])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: markd")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("fallback", "at"),
    [
        ([{"source": "nope", "pair": "X-Y"}], "fallback[0]"),
        ([[{"source": "nope", "pair": "X-Y"}]], "fallback[0][0]"),
        (
            [
                [{"source": "a", "pair": "X-Y"}],
                [{"source": "b", "pair": "X-Y"}, {"source": "nope", "pair": "X-Y"}],
            ],
            "fallback[1][1]",
        ),
    ],
    ids=["one_tier", "list_of_one_tier", "list_of_two_tiers"],
)
def test_problem_in_a_fallback_tier_names_its_exact_path(fallback: object, at: str) -> None:
    with pytest.raises(ConfigError) as err:
        config({"X-USD": {"sources": refs("abc"), "fallback": fallback}})
    assert err.value.problems == [f"markets.X-USD.{at}.source: 'nope' is not defined under [sources]"]


@pytest.mark.parametrize(
    ("policy", "at"),
    [
        ({"min_sources": True}, "policy.min_sources"),
        ({"max_deviation_bps": True}, "policy.max_deviation_bps"),
        ({"max_age_ms": False}, "policy.max_age_ms"),
    ],
)
def test_a_boolean_for_a_number_is_a_bad_type(policy: dict[str, bool], at: str) -> None:
    with pytest.raises(ConfigError) as err:
        config({"X-USD": {"sources": refs("abc")}}, **policy)
    assert err.value.problems == [f"{at}: true/false is not a valid value here"]


def test_a_boolean_in_a_market_or_source_entry_is_a_bad_type() -> None:
    with pytest.raises(ConfigError) as err:
        config(
            {
                "X-USD": {
                    "sources": [*refs("ab"), {"source": "c", "pair": "X-Y", "decimals": True}],
                    "min_sources": True,
                }
            }
        )
    assert err.value.problems == [
        "markets.X-USD.sources[2].decimals: true/false is not a valid value here",
        "markets.X-USD.min_sources: true/false is not a valid value here",
    ]


def test_env_redis_url_over_a_scalar_redis_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKD_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("MARKD_HTTP_PORT", "9200")
    text = 'redis = "redis://cache:6379/0"\nservice = 9108\n' + BASE
    assert refused(tmp_path, capsys, text) == [
        "redis: not a table, so MARKD_REDIS_URL cannot set a key in it",
        "service: not a table, so MARKD_HTTP_PORT cannot set a key in it",
    ]


def test_schema_and_venue_problems_come_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A `ws` transport on a REST-only venue and an http_json source without base_url used to show
    only once the schema's errors were fixed: a second round of check-config."""
    text = BASE.replace("[policy]", "[policy]\nmax_agee_ms = 1").replace(
        '[sources.pyth]\nkind = "pyth"',
        '[sources.pyth]\nkind = "pyth"\ntransport = "ws"\n\n[sources.j]\nkind = "http_json"',
    )
    assert sorted(refused(tmp_path, capsys, text)) == [
        "policy.max_agee_ms: unknown key (typo?)",
        "sources.j.base_url: http_json has no default endpoint: set base_url",
        "sources.pyth.transport: pyth has no WebSocket transport (markd reads it over REST)",
    ]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            ("[policy]", '[service]\nhttp_port = "9108"\n\n[policy]'),
            "service.http_port: expected a number, got the string '9108'",
        ),
        (("max_age_ms = 4000", 'max_age_ms = "4000"'), "policy.max_age_ms: expected a number, got the string '4000'"),
        (
            ("max_deviation_bps = 100", 'max_deviation_bps = "1e2"'),
            "markets.BTC-USD.max_deviation_bps: expected a number",
        ),
        (("decimals = 8", 'decimals = "8"'), "markets.BTC-USD.fallback[1].decimals: expected a number"),
        (('kind = "binance"', 'kind = "binance"\nweight = "2"'), "sources.binance.weight: expected a number"),
        (("[policy]", '[redis]\ncluster = "false"\n\n[policy]'), "redis.cluster: expected true/false, got the string"),
    ],
    ids=["http_port", "policy", "market-override", "source-ref", "source", "bool"],
)
def test_a_quoted_number_in_the_file_is_a_string_not_a_number(
    edit: tuple[str, str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (problems,) = refused(tmp_path, capsys, BASE.replace(*edit))
    assert problems.startswith(problem) and problems.endswith("(drop the quotes)")


def test_env_values_are_text_that_reads_as_numbers_and_booleans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKD_POLICY__MAX_DEVIATION_BPS", "1e2")
    monkeypatch.setenv("MARKD_REDIS__CLUSTER", "true")
    monkeypatch.setenv("MARKD_SERVICE__HTTP_HOST", "0.0.0.0")
    s = _base_settings(tmp_path)
    assert (s.policy.max_deviation_bps, s.redis.cluster, s.service.http_host) == (100.0, True, "0.0.0.0")


@pytest.mark.parametrize("name", ["MARKD_MARKETS__BTC_USD__MIN_SOURCES", "MARKD_MARKETS__btc_usd__MIN_SOURCES"])
def test_env_can_name_a_hyphenated_market_with_underscores(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`MARKD_MARKETS__BTC-USD__...` cannot be typed in a shell (`export` refuses the hyphen)."""
    monkeypatch.setenv(name, "3")
    s = _base_settings(tmp_path)
    assert s.policy_for("BTC-USD").min_sources == 3
    assert s.policy_for("USDT-USD").min_sources == 2


def test_env_names_a_source_in_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKD_SOURCES__COINBASE__POLL_MS", "250")
    assert _base_settings(tmp_path).sources["coinbase"].poll_ms == 250


def test_a_misspelt_market_in_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKD_MARKETS__BTC_UDS__MIN_SOURCES", "3")
    with pytest.raises(ConfigError) as err:
        _base_settings(tmp_path)
    assert err.value.problems == ["MARKD_MARKETS__BTC_UDS__MIN_SOURCES: no market 'BTC_UDS' in the config file"]


def test_the_readme_env_example_runs_in_a_shell(tmp_path: Path) -> None:
    """The README's `env 'MARKD_MARKETS__BTC-USD__MIN_SOURCES=4' markd ...` and the underscore spelling."""
    (tmp_path / "markd.toml").write_text(BASE)
    markd = f"{sys.executable} -m oracle check-config {tmp_path / 'markd.toml'}"
    for line in (
        f"env 'MARKD_MARKETS__BTC-USD__MIN_SOURCES=3' {markd}",
        f"MARKD_MARKETS__BTC_USD__MIN_SOURCES=3 {markd}",
    ):
        done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["markets"]["BTC-USD"]["policy"]["min_sources"] == 3
