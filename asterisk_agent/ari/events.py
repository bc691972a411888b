"""ARI events parsed into typed objects at the edge.

:func:`parse_event` takes one decoded WebSocket message and returns a typed event, an :class:`UnknownEvent`
for types we do not handle, or raises ``ValueError`` for a message that is not a well-formed event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DialplanLocation:
    context: str = ""
    exten: str = ""
    priority: int = 0
    app_name: str = ""
    app_data: str = ""


def _sub_object(data: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional nested object of a channel; anything but an object (or nothing) is malformed."""
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"channel {key} is not an object")
    return value


@dataclass(frozen=True)
class Channel:
    id: str
    name: str
    state: str
    caller_number: str = ""
    caller_name: str = ""
    connected_number: str = ""
    dialplan: DialplanLocation = field(default_factory=DialplanLocation)
    language: str = "en"

    @classmethod
    def from_json(cls, data: Any) -> Channel:
        if not isinstance(data, dict):
            raise ValueError("channel is not an object")
        channel_id = data.get("id")
        if not isinstance(channel_id, str) or not channel_id:
            raise ValueError("channel without id")
        caller = _sub_object(data, "caller")
        connected = _sub_object(data, "connected")
        location = _sub_object(data, "dialplan")
        try:
            priority = int(location.get("priority", 0))
        except (TypeError, ValueError) as exc:
            raise ValueError("channel dialplan priority is not a number") from exc
        return cls(
            id=channel_id,
            name=str(data.get("name", "")),
            state=str(data.get("state", "")),
            caller_number=str(caller.get("number", "")),
            caller_name=str(caller.get("name", "")),
            connected_number=str(connected.get("number", "")),
            dialplan=DialplanLocation(
                context=str(location.get("context", "")),
                exten=str(location.get("exten", "")),
                priority=priority,
                app_name=str(location.get("app_name", "")),
                app_data=str(location.get("app_data", "")),
            ),
            language=str(data.get("language", "en")),
        )


@dataclass(frozen=True)
class Event:
    type: str
    application: str


@dataclass(frozen=True)
class StasisStart(Event):
    channel: Channel
    args: tuple[str, ...]
    replace_channel: Channel | None = None


@dataclass(frozen=True)
class StasisEnd(Event):
    channel: Channel


@dataclass(frozen=True)
class ChannelStateChange(Event):
    channel: Channel


@dataclass(frozen=True)
class ChannelDtmfReceived(Event):
    channel: Channel
    digit: str
    duration_ms: int


@dataclass(frozen=True)
class ChannelHangupRequest(Event):
    channel: Channel
    cause: int


@dataclass(frozen=True)
class ChannelDestroyed(Event):
    channel: Channel
    cause: int
    cause_txt: str


@dataclass(frozen=True)
class ChannelEnteredBridge(Event):
    channel: Channel
    bridge_id: str


@dataclass(frozen=True)
class ChannelLeftBridge(Event):
    channel: Channel
    bridge_id: str


@dataclass(frozen=True)
class BridgeDestroyed(Event):
    bridge_id: str


@dataclass(frozen=True)
class PlaybackStarted(Event):
    playback_id: str
    target_uri: str


@dataclass(frozen=True)
class PlaybackFinished(Event):
    playback_id: str
    target_uri: str
    state: str


@dataclass(frozen=True)
class Dial(Event):
    peer: Channel
    dialstatus: str


@dataclass(frozen=True)
class RecordingFinished(Event):
    name: str
    target_uri: str


@dataclass(frozen=True)
class RecordingFailed(Event):
    name: str
    target_uri: str
    cause: str


@dataclass(frozen=True)
class ApplicationReplaced(Event):
    pass


@dataclass(frozen=True)
class UnknownEvent(Event):
    raw: dict[str, Any]


def _str(data: dict[str, Any], key: str, owner: str | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{owner or data.get('type')} without {key}")
    return value


def _obj(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"{data.get('type')} without {key}")
    return value


def _channel(data: dict[str, Any], key: str) -> Channel:
    return Channel.from_json(_obj(data, key))


def _int(data: dict[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{data.get('type')}: {key} is not a number")
    return value


def parse_event(message: str | bytes) -> Event:
    """Parse one WebSocket text message into an event; raise ValueError if it is not a valid event."""
    try:
        data = json.loads(message)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("event is not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValueError("event without type")
    app = data.get("application", "")
    if not isinstance(app, str):
        raise ValueError("event application is not a string")

    if kind == "StasisStart":
        args = data.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("StasisStart args is not a list of strings")
        replace = data.get("replace_channel")
        return StasisStart(
            kind, app, _channel(data, "channel"), tuple(args),
            Channel.from_json(replace) if replace else None,
        )
    if kind == "StasisEnd":
        return StasisEnd(kind, app, _channel(data, "channel"))
    if kind == "ChannelStateChange":
        return ChannelStateChange(kind, app, _channel(data, "channel"))
    if kind == "ChannelDtmfReceived":
        digit = _str(data, "digit")
        if len(digit) != 1 or digit not in "0123456789ABCD*#":
            raise ValueError(f"ChannelDtmfReceived digit {digit!r} is not a DTMF digit")
        return ChannelDtmfReceived(
            kind, app, _channel(data, "channel"), digit, _int(data, "duration_ms")
        )
    if kind == "ChannelHangupRequest":
        return ChannelHangupRequest(kind, app, _channel(data, "channel"), _int(data, "cause"))
    if kind == "ChannelDestroyed":
        return ChannelDestroyed(
            kind, app, _channel(data, "channel"), _int(data, "cause"), str(data.get("cause_txt", ""))
        )
    if kind in ("ChannelEnteredBridge", "ChannelLeftBridge"):
        bridge = _obj(data, "bridge")
        cls = ChannelEnteredBridge if kind == "ChannelEnteredBridge" else ChannelLeftBridge
        return cls(kind, app, _channel(data, "channel"), _str(bridge, "id", f"{kind} bridge"))
    if kind == "BridgeDestroyed":
        return BridgeDestroyed(kind, app, _str(_obj(data, "bridge"), "id", f"{kind} bridge"))
    if kind == "PlaybackStarted":
        playback = _obj(data, "playback")
        return PlaybackStarted(kind, app, _str(playback, "id", f"{kind} playback"), str(playback.get("target_uri", "")))
    if kind == "PlaybackFinished":
        playback = _obj(data, "playback")
        return PlaybackFinished(
            kind, app, _str(playback, "id", f"{kind} playback"), str(playback.get("target_uri", "")),
            str(playback.get("state", "")),
        )
    if kind == "Dial":
        return Dial(kind, app, _channel(data, "peer"), str(data.get("dialstatus", "")))
    if kind in ("RecordingFinished", "RecordingFailed"):
        recording = _obj(data, "recording")
        name, target = _str(recording, "name", f"{kind} recording"), str(recording.get("target_uri", ""))
        if kind == "RecordingFinished":
            return RecordingFinished(kind, app, name, target)
        return RecordingFailed(kind, app, name, target, str(recording.get("cause", "")))
    if kind == "ApplicationReplaced":
        return ApplicationReplaced(kind, app)
    return UnknownEvent(kind, app, data)


def channel_id_of(event: Event) -> str | None:
    """The channel an event is about, for dispatch by channel id."""
    channel = getattr(event, "channel", None)
    if isinstance(channel, Channel):
        return channel.id
    peer = getattr(event, "peer", None)
    if isinstance(peer, Channel):
        return peer.id
    return None
