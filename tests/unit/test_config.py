"""Configuration: load_config, defaults, environment overrides, error messages, accounts, deployment checks, CLI."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from asterisk_agent.cli import main
from asterisk_agent.config import (
    SAMPLE_ARI_PASSWORD,
    AccountConfig,
    AriConfig,
    ConfigError,
    MediaConfig,
    Settings,
    deployment_problems,
    load_config,
    match_pattern,
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ASTERISK_AGENT_* variable of the surrounding shell may leak into these tests."""
    for name in list(os.environ):
        if name.startswith("ASTERISK_AGENT_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


VALID = """\
    instance_id: agent-2
    ari:
      url: http://10.1.2.3:8088/
      username: worker
      password: s3cret-from-ari-conf
      app: voice-agent
      request_timeout_ms: 2000
      reconnect_min_ms: 50
      reconnect_max_ms: 800
    media:
      bind_address: 10.1.2.4
      advertised_address: 10.1.2.4
      port_min: 30000
      port_max: 30999
      codec: slin16
    timers:
      call_max_ms: 60000
      digit_timeout_ms: 1500
    accounts:
      sales:
        numbers: ["+15551230000", "_2XXX"]
        greeting: sales/welcome
        digits_max: 4
      rest:
        numbers: ["_X."]
    fallback_context: operators
    log_level: DEBUG
"""


# --- loading --------------------------------------------------------------------------------------------------


def test_load_valid_file(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, VALID))
    assert settings.instance_id == "agent-2"
    assert settings.ari.url == "http://10.1.2.3:8088"  # trailing slash removed
    assert settings.ari.host == "10.1.2.3"
    assert (settings.ari.username, settings.ari.password, settings.ari.app) == ("worker", "s3cret-from-ari-conf",
                                                                                 "voice-agent")
    assert (settings.ari.request_timeout_ms, settings.ari.reconnect_min_ms, settings.ari.reconnect_max_ms) == (
        2000, 50, 800)
    assert settings.ari.connect_timeout_ms == 3000  # not in the file: default
    assert (settings.media.port_min, settings.media.port_max, settings.media.codec) == (30000, 30999, "slin16")
    assert (settings.timers.call_max_ms, settings.timers.digit_timeout_ms) == (60000, 1500)
    assert settings.timers.dtmf_duration_ms == 100
    assert settings.accounts == {
        "sales": AccountConfig(numbers=["+15551230000", "_2XXX"], greeting="sales/welcome", digits_max=4),
        "rest": AccountConfig(numbers=["_X."]),
    }
    assert (settings.fallback_context, settings.log_level) == ("operators", "DEBUG")


def test_load_accepts_str_path(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, "log_level: ERROR\n"))).log_level == "ERROR"


def test_defaults() -> None:
    settings = load_config(None)
    assert settings == Settings()
    assert settings.instance_id == "aa"
    assert settings.ari.url == "http://127.0.0.1:8088"
    assert settings.ari.username == "asterisk-agent"
    assert settings.ari.password == SAMPLE_ARI_PASSWORD == "change-me-ari-password"
    assert settings.ari.app == "asterisk-agent"
    assert (settings.ari.request_timeout_ms, settings.ari.connect_timeout_ms, settings.ari.max_connections) == (
        5000, 3000, 8)
    assert (settings.ari.reconnect_min_ms, settings.ari.reconnect_max_ms) == (100, 5000)
    assert (settings.media.bind_address, settings.media.advertised_address) == ("127.0.0.1", "127.0.0.1")
    assert (settings.media.port_min, settings.media.port_max, settings.media.codec) == (40000, 40999, "ulaw")
    assert settings.timers.call_max_ms == 300_000
    assert settings.timers.digit_timeout_ms == 3000
    assert settings.timers.teardown_timeout_ms == 5000
    assert settings.timers.dtmf_duration_ms == 100
    assert settings.accounts == {"default": AccountConfig(numbers=["_X."])}
    assert settings.accounts["default"].greeting == "hello-world"
    assert settings.accounts["default"].digits_max == 8
    assert (settings.fallback_context, settings.log_level) == ("agent-fallback", "INFO")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing set\n")) == Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.log_level = "DEBUG"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID)
    monkeypatch.setenv("ASTERISK_AGENT_ARI__PASSWORD", "from-the-environment")
    monkeypatch.setenv("ASTERISK_AGENT_TIMERS__CALL_MAX_MS", "1234")
    monkeypatch.setenv("ASTERISK_AGENT_LOG_LEVEL", "WARNING")
    settings = load_config(path)
    assert settings.ari.password == "from-the-environment"
    assert settings.timers.call_max_ms == 1234
    assert settings.log_level == "WARNING"
    # the rest of the same sections still comes from the file
    assert settings.ari.url == "http://10.1.2.3:8088"
    assert settings.ari.username == "worker"
    assert settings.timers.digit_timeout_ms == 1500


def test_environment_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTERISK_AGENT_ARI__URL", "http://pbx.example:8088")
    assert load_config().ari.url == "http://pbx.example:8088"


def test_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTERISK_AGENT_ARI__MAX_CONNECTIONS", "0")
    with pytest.raises(ConfigError, match=r"^environment: ari\.max_connections: "):
        load_config()


# --- bad files: the message names the file, the key and the reason ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("colour: red\n", "colour", "unknown key"),
        ("ari:\n  passwd: x\n", "ari.passwd", "unknown key"),
        ("accounts:\n  a:\n    numbers: ['1']\n    voice: x\n", "accounts.a.voice", "unknown key"),
        ("ari:\n  url: ftp://10.0.0.1:8088\n", "ari.url", "must be an http:// or https:// URL"),
        ("ari:\n  url: 10.0.0.1:8088\n", "ari.url", "must be an http:// or https:// URL"),
        ("ari:\n  url: 'http://'\n", "ari.url", "with a host"),
        ("ari:\n  app: 'my app'\n", "ari.app", "should match pattern"),
        ("ari:\n  reconnect_min_ms: 500\n  reconnect_max_ms: 100\n", "ari", "reconnect_max_ms must be at least"),
        ("media:\n  port_min: 30000\n  port_max: 30000\n", "media", "port_max must be greater than port_min"),
        ("media:\n  port_min: 30000\n  port_max: 20000\n", "media", "port_max must be greater than port_min"),
        ("media:\n  port_min: 80\n", "media.port_min", "greater than or equal to 1024"),
        ("media:\n  advertised_address: pbx.example\n", "media.advertised_address", "is not an IP address"),
        ("media:\n  codec: opus\n", "media.codec", "should match pattern"),
        ("timers:\n  dtmf_duration_ms: 5\n", "timers.dtmf_duration_ms", "greater than or equal to 40"),
        ("timers:\n  call_max_ms: soon\n", "timers.call_max_ms", "valid integer"),
        ("instance_id: AA\n", "instance_id", "must be 2-16 characters"),
        ("instance_id: a\n", "instance_id", "must be 2-16 characters"),
        ("instance_id: 1aa\n", "instance_id", "must be 2-16 characters"),
        ("instance_id: a_b\n", "instance_id", "must be 2-16 characters"),
        ("instance_id: abcdefghijklmnopq\n", "instance_id", "must be 2-16 characters"),
        ("accounts:\n  a:\n    numbers: []\n", "accounts.a.numbers", "at least 1 item"),
        ("accounts:\n  a:\n    greeting: x\n", "accounts.a.numbers", "Field required"),
        ("accounts:\n  a:\n    numbers: ['12a']\n", "accounts.a.numbers", "neither a number nor an Asterisk pattern"),
        ("accounts:\n  a:\n    numbers: ['2XXX']\n", "accounts.a.numbers", "neither a number nor an Asterisk pattern"),
        ("accounts:\n  a:\n    numbers: ['_[12']\n", "accounts.a.numbers", "unclosed or empty [...] set"),
        ("accounts:\n  a:\n    numbers: ['_[]X']\n", "accounts.a.numbers", "unclosed or empty [...] set"),
        ("fallback_context: 'a b'\n", "fallback_context", "should match pattern"),
        ("log_level: debug\n", "log_level", "should match pattern"),
    ],
)
def test_bad_file_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message


def test_every_error_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "colour: red\ninstance_id: X\nmedia:\n  codec: opus\n")
    lines = config_error(path).splitlines()
    assert len(lines) == 3
    assert {line.split(": ")[1] for line in lines} == {"colour", "instance_id", "media.codec"}
    assert all(line.startswith(f"{path}: ") for line in lines)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("log_level: INFO\ninstance_id: aa\nfallback_context: @x\n", 3),
        ("ari:\n  url: http://127.0.0.1:8088\n password: x\n", 3),
        ("ari: {url: 'http://127.0.0.1:8088'\nmedia: {}\n", 2),
        ("instance_id: aa\nari:\n\turl: x\n", 3),
    ],
)
def test_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}: line {line}: not valid YAML: "), message


@pytest.mark.parametrize("text", ["- ari\n- media\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path) == f"{path}: the top level must be a mapping of keys"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    assert config_error(path) == f"{path}: cannot read: No such file or directory"


def test_unreadable_path(tmp_path: Path) -> None:
    assert config_error(tmp_path) == f"{tmp_path}: cannot read: Is a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: INFO\n")
    path.chmod(0)
    assert config_error(path) == f"{path}: cannot read: Permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("fallback_context: caf\xe9\n".encode("latin-1"))
    assert config_error(path) == f"{path}: not UTF-8 text (byte 21)"


# --- accounts by dialled number ----------------------------------------------------------------------------------


def accounts(**numbers: list[str]) -> Settings:
    return Settings(accounts={name: AccountConfig(numbers=values) for name, values in numbers.items()})


def test_account_for_exact_numbers() -> None:
    settings = accounts(sales=["2000", "+15551230000"], support=["3000"])
    assert settings.account_for("2000") == "sales"
    assert settings.account_for("+15551230000") == "sales"
    assert settings.account_for("3000") == "support"
    assert settings.account_for("4000") is None
    assert settings.account_for("200") is None
    assert settings.account_for("20000") is None


def test_account_for_patterns() -> None:
    settings = accounts(two=["_2XXX"], dotted=["_9."], ranged=["_[1-3]XX"])
    assert settings.account_for("2345") == "two"
    assert settings.account_for("2999") == "two"
    assert settings.account_for("234") == "ranged"
    assert settings.account_for("199") == "ranged"
    assert settings.account_for("499") is None
    assert settings.account_for("23456") is None
    assert settings.account_for("91") == "dotted"
    assert settings.account_for("9123456789") == "dotted"
    assert settings.account_for("9") is None  # "." needs at least one more character


def test_exact_number_wins_over_any_pattern() -> None:
    settings = accounts(catch_all=["_X.", "_2XXX"], exact=["2000"])
    assert settings.account_for("2000") == "exact"
    assert settings.account_for("2001") == "catch_all"


def test_longest_pattern_wins() -> None:
    settings = accounts(short=["_X."], long=["_2XXX"], longer=["_200[0-4]", "_5!"])
    assert settings.account_for("2000") == "longer"
    assert settings.account_for("2005") == "long"
    assert settings.account_for("2100") == "long"
    assert settings.account_for("3100") == "short"
    assert settings.account_for("5") == "longer"
    # the order of the accounts does not matter
    reordered = accounts(longer=["_200[0-4]"], long=["_2XXX"], short=["_X."])
    assert reordered.account_for("2000") == "longer"
    assert reordered.account_for("2100") == "long"


def test_default_account_owns_every_number() -> None:
    settings = Settings()
    assert settings.account_for("2000") == "default"
    assert settings.account_for("+15551230000") is None  # "_X." needs a digit first


@pytest.mark.parametrize(
    ("pattern", "number", "matches"),
    [
        ("2000", "2000", True),
        ("2000", "20000", False),
        ("_2XXX", "2000", True),
        ("_2XXX", "2999", True),
        ("_2XXX", "3000", False),
        ("_2XXX", "200", False),
        ("_2XXX", "200A", False),
        ("_ZXX", "100", True),
        ("_ZXX", "010", False),
        ("_NXX", "200", True),
        ("_NXX", "199", False),
        ("_X.", "1", False),
        ("_X.", "12", True),
        ("_X.", "1*#", True),
        ("_X!", "1", True),
        ("_X!", "123", True),
        ("_[1-3]XX", "100", True),
        ("_[1-3]XX", "399", True),
        ("_[1-3]XX", "400", False),
        ("_[1-3]XX", "-00", False),
        ("_[13]X", "15", True),
        ("_[13]X", "25", False),
        ("_+1NXX.", "+12005551000", True),
        ("_+1NXX.", "12005551000", False),
        ("_*9X", "*91", True),
        ("_*9X", "991", False),
        ("_#X", "#1", True),
    ],
)
def test_match_pattern(pattern: str, number: str, matches: bool) -> None:
    assert match_pattern(pattern, number) is matches


@pytest.mark.parametrize("pattern", ["_[12", "_X[", "_[]X", "_1[]"])
def test_match_pattern_refuses_unclosed_or_empty_sets(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"unclosed or empty \[\.\.\.\] set"):
        match_pattern(pattern, "12")


# --- deployment checks -------------------------------------------------------------------------------------------


def settings_with(url: str, *, password: str = SAMPLE_ARI_PASSWORD, advertised: str = "127.0.0.1") -> Settings:
    return Settings(ari=AriConfig(url=url, password=password), media=MediaConfig(advertised_address=advertised))


@pytest.mark.parametrize("url", ["http://10.0.0.5:8088", "https://pbx.example.com", "http://[2001:db8::1]:8088"])
def test_placeholder_password_refused_off_loopback(url: str) -> None:
    errors, _ = deployment_problems(settings_with(url, advertised="10.0.0.9"))
    assert len(errors) == 1
    assert errors[0].startswith("ari.password: still the sample's placeholder")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8088", "http://127.0.0.53:8088", "http://localhost:8088", "http://[::1]:8088"]
)
def test_placeholder_password_allowed_on_loopback(url: str) -> None:
    assert deployment_problems(settings_with(url)) == ([], [])


def test_real_password_off_loopback_is_fine() -> None:
    assert deployment_problems(settings_with("http://10.0.0.5:8088", password="x9", advertised="10.0.0.9")) == (
        [], [])


def test_warning_for_loopback_media_with_remote_ari() -> None:
    errors, warnings = deployment_problems(settings_with("http://10.0.0.5:8088", password="x9"))
    assert errors == []
    assert len(warnings) == 1
    assert warnings[0].startswith("media.advertised_address: loopback is advertised")
    _, v6_warnings = deployment_problems(settings_with("http://10.0.0.5:8088", password="x9", advertised="::1"))
    assert len(v6_warnings) == 1


def test_no_warning_for_loopback_media_with_local_ari() -> None:
    assert deployment_problems(settings_with("http://127.0.0.1:8088", password="x9")) == ([], [])


# --- the check-config command ------------------------------------------------------------------------------------


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: ok (2 accounts, ARI http://10.1.2.3:8088, app voice-agent)\n"
    assert err == ""


def test_check_config_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "ari:\n  url: ftp://10.0.0.1\n")
    assert main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {path}: ari.url: must be an http:// or https:// URL")


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.yaml"
    assert main(["check-config", str(path)]) == 1
    assert f"error: {path}: cannot read" in capsys.readouterr().err


def test_check_config_placeholder_password_off_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "ari:\n  url: http://10.0.0.5:8088\n")
    assert main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"error: {path}: ari.password: still the sample's placeholder" in err
    assert f"warning: {path}: media.advertised_address: loopback" in err


def test_check_config_warning_alone_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "ari:\n  url: http://10.0.0.5:8088\n  password: real-one\n")
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: ok")
    assert err.startswith(f"warning: {path}: media.advertised_address: loopback")


def test_pause_ms_must_come_before_the_endpoint() -> None:
    with pytest.raises(ValueError, match="pause_ms"):
        Settings(speech={"endpointer": {"end_ms": 400, "pause_ms": 400}})
    assert Settings(speech={"endpointer": {"pause_ms": 200}}).speech.endpointer.pause_ms == 200


def test_an_account_flow_must_have_its_integrations_configured(tmp_path: Path) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("accounts:\n  bank:\n    numbers: ['100']\n    flow: bank\n")
    with pytest.raises(ConfigError, match="flow 'bank' calls 'banking', and no endpoint 'banking' is configured"):
        load_config(path)
    path.write_text("integrations:\n  core-banking: {base_url: 'http://127.0.0.1:18082'}\n"
                    "accounts:\n  bank:\n    numbers: ['100']\n    flow: bank\n"
                    "    integrations: {banking: core-banking}\n")
    assert load_config(path).accounts["bank"].endpoint_for("banking") == "core-banking"


def test_a_broken_flow_file_is_reported_with_its_line(tmp_path: Path) -> None:
    flow = tmp_path / "mine.yaml"
    flow.write_text("name: mine\nstart: nowhere\nstates:\n  a:\n    say: hi\n    end: done\n")
    path = tmp_path / "worker.yaml"
    path.write_text(f"accounts:\n  a:\n    numbers: ['100']\n    flow: {flow}\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml:2: start: no state named 'nowhere'"):
        load_config(path)


def test_a_flow_is_read_once_by_validation_and_handed_on(tmp_path: Path) -> None:
    flow = tmp_path / "mine.yaml"
    flow.write_text("name: mine\nstart: a\nstates:\n  a:\n    say: hi\n    end: done\n")
    path = tmp_path / "worker.yaml"
    path.write_text(f"accounts:\n  a:\n    numbers: ['100']\n    flow: {flow}\n  b:\n    numbers: ['200']\n")
    settings = load_config(path)
    flow.unlink()  # the deployment checks and the worker use what validation read, not the file again
    assert deployment_problems(settings) == ([], [])
    loaded = settings.flow_of("a")
    assert loaded is not None and loaded.name == "mine"
    assert settings.flow_of("b") is None
