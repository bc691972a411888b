"""The store's and the webhooks' configuration: defaults, environment overrides, validation that never echoes
a password or a secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asterisk_agent.config import ConfigError, Settings, StoreConfig, load_config

SECRET = "webhook-secret-0123456789"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ASTERISK_AGENT_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_store_defaults_to_an_sqlite_file_in_the_data_folder() -> None:
    assert Settings().store_url() == "sqlite+aiosqlite:///data/asterisk-agent.db"
    assert Settings(data_dir="/srv/agent").store_url() == "sqlite+aiosqlite:////srv/agent/asterisk-agent.db"
    url = "postgresql+asyncpg://agent:pw@db.example:5432/calls"
    assert Settings(store=StoreConfig(url=url)).store_url() == url
    assert Settings().webhooks() == {}


def test_store_url_and_webhook_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "accounts:\n  sales:\n    numbers: ['_X.']\n    webhook:\n"
                           "      url: https://crm.example/hooks\n      secret: placeholder-in-the-file\n")
    monkeypatch.setenv("ASTERISK_AGENT_STORE__URL", "postgresql://agent:pw@db.example/calls")
    monkeypatch.setenv("ASTERISK_AGENT_ACCOUNTS__SALES__WEBHOOK__SECRET", SECRET)
    settings = load_config(path)
    assert settings.store_url() == "postgresql://agent:pw@db.example/calls"
    assert settings.webhooks()["sales"].secret == SECRET
    assert SECRET not in repr(settings) and "pw@" not in repr(settings)


def test_bad_store_and_webhook_settings_are_refused_without_echoing_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "store:\n  url: mysql://agent:hunter2@db/calls\n"
                           "outbox:\n  lease_ms: 1000\n  timeout_ms: 1000\n"
                           "accounts:\n  sales:\n    numbers: ['_X.']\n    webhook:\n"
                           "      url: https://crm.example/hooks\n      secret: tooshort42\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "store.url: unsupported store database 'mysql'" in message
    assert "outbox: lease_ms must be greater than timeout_ms" in message
    assert "accounts.sales.webhook.secret" in message
    assert "hunter2" not in message and "tooshort42" not in message


def test_a_malformed_webhook_url_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts:\n  sales:\n    numbers: ['_X.']\n    webhook:\n"
                           f"      url: 'crm.example/hooks'\n      secret: {SECRET}\n")
    with pytest.raises(ConfigError, match=r"accounts\.sales\.webhook\.url: must be an http:// or https:// URL"):
        load_config(path)
