"""The shipped sample configuration (asterisk_agent/config.sample.yaml): valid, complete and showing the defaults."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from asterisk_agent.cli import main
from asterisk_agent.config import SAMPLE_ARI_PASSWORD, AccountConfig, Settings, deployment_problems, load_config

SAMPLE = Path(__file__).resolve().parents[2] / "asterisk_agent" / "config.sample.yaml"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ASTERISK_AGENT_"):
            monkeypatch.delenv(name)


def raw_sample() -> dict[str, Any]:
    loaded = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_sample_ships_with_the_package() -> None:
    assert SAMPLE.is_file()
    pyproject = tomllib.loads((SAMPLE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "config.sample.yaml" in pyproject["tool"]["setuptools"]["package-data"]["asterisk_agent"]


def test_sample_loads() -> None:
    settings = load_config(SAMPLE)
    assert settings.ari.password == SAMPLE_ARI_PASSWORD
    assert settings.ari.host == "127.0.0.1"
    assert len(settings.accounts) >= 2
    assert deployment_problems(settings) == ([], [])


def test_sample_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{SAMPLE}: ok (")
    assert err == ""


def _missing_keys(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> list[str]:
    missing = []
    for name, info in model.model_fields.items():
        key = prefix + name
        if name not in data:
            missing.append(key)
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            missing += _missing_keys(annotation, data[name], key + ".")
    return missing


def test_sample_sets_every_key() -> None:
    """Every key of Settings appears in the sample, so a new setting must be documented there."""
    data = raw_sample()
    assert _missing_keys(Settings, data) == []
    for name, account in data["accounts"].items():
        assert _missing_keys(AccountConfig, account, f"accounts.{name}.") == []


def test_sample_shows_the_defaults() -> None:
    sample = load_config(SAMPLE)
    assert sample.model_dump(exclude={"accounts", "integrations"}) == Settings().model_dump(
        exclude={"accounts", "integrations"})
    # The sample's endpoint shows every endpoint default.
    for endpoint in sample.integrations.values():
        assert endpoint.model_dump(exclude={"base_url"}) == type(endpoint)(base_url="http://x").model_dump(
            exclude={"base_url"})
    default_account = AccountConfig(numbers=["_X."])
    for name, account in sample.accounts.items():
        assert (account.greeting, account.digits_max) == (default_account.greeting, default_account.digits_max), name


def test_sample_accounts_route_by_number() -> None:
    settings = load_config(SAMPLE)
    assert settings.account_for("+15551230000") == "sales"
    assert settings.account_for("2345") == "sales"
    assert settings.account_for("3456") == "default"
    assert settings.account_for("+15551239000") == "clinic"
    assert settings.accounts["clinic"].flow == "clinic"


def test_sample_documents_every_key() -> None:
    """Each key has a comment line just above it (a *_max key may share the comment of its *_min key)."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    keys = set(Settings.model_fields) | {
        name for field in Settings.model_fields.values()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        for name in field.annotation.model_fields
    } | set(AccountConfig.model_fields)
    documented: set[str] = set()
    for index, line in enumerate(lines):
        stripped = line.strip()
        key = stripped.split(":", 1)[0]
        if stripped.startswith("#") or key not in keys:
            continue
        above = lines[index - 1].strip() if index else ""
        if above.startswith("#") or above.split(":", 1)[0].replace("_min", "_max") == key:
            documented.add(key)
    undocumented = sorted(keys - documented)
    assert not undocumented, f"keys without a comment in {SAMPLE.name}: {undocumented}"
    assert "ASTERISK_AGENT_ARI__PASSWORD" in SAMPLE.read_text(encoding="utf-8")
