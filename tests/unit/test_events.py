"""parse_event: ARI WebSocket messages (as Asterisk 22 sends them) into typed events, and malformed ones refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asterisk_agent.ari import events
from asterisk_agent.ari.events import (
    ApplicationReplaced,
    BridgeDestroyed,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEnteredBridge,
    ChannelHangupRequest,
    ChannelLeftBridge,
    ChannelStateChange,
    Dial,
    DialplanLocation,
    Event,
    PlaybackFinished,
    PlaybackStarted,
    RecordingFailed,
    RecordingFinished,
    StasisEnd,
    StasisStart,
    UnknownEvent,
    channel_id_of,
    parse_event,
)

APP = "asterisk-agent"
TIMESTAMP = "2026-11-28T10:15:02.123+0000"


def channel_json(channel_id: str = "1764324902.17", *, state: str = "Ring", exten: str = "2000") -> dict[str, Any]:
    """A channel object as ARI sends it."""
    return {
        "id": channel_id,
        "name": "PJSIP/carrier-00000011",
        "state": state,
        "protocol_id": "a84c5d1b-0fb3-4c8e-9a45-3b0e8d2f3a55",
        "caller": {"name": "Alice", "number": "5551000"},
        "connected": {"name": "", "number": "2000"},
        "accountcode": "",
        "dialplan": {"context": "from-trunk", "exten": exten, "priority": 2, "app_name": "Stasis",
                     "app_data": f"{APP},inbound,{exten}"},
        "creationtime": TIMESTAMP,
        "language": "fr",
        "tenantid": "",
    }


def bridge_json(bridge_id: str = "aa-br-3d4e5f") -> dict[str, Any]:
    return {"id": bridge_id, "technology": "simple_bridge", "bridge_type": "mixing", "bridge_class": "stasis",
            "creator": APP, "name": "", "channels": [], "creationtime": TIMESTAMP, "video_mode": "none"}


def message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "timestamp": TIMESTAMP, "asterisk_id": "02:42:ac:11:00:02",
                       "application": APP, **fields})


def test_channel_fields() -> None:
    channel = Channel.from_json(channel_json("1764324902.17", state="Up"))
    assert channel == Channel(
        id="1764324902.17", name="PJSIP/carrier-00000011", state="Up", caller_number="5551000", caller_name="Alice",
        connected_number="2000",
        dialplan=DialplanLocation("from-trunk", "2000", 2, "Stasis", f"{APP},inbound,2000"),
        language="fr",
    )


def test_channel_defaults_for_missing_optional_fields() -> None:
    channel = Channel.from_json({"id": "c1"})
    assert channel == Channel(id="c1", name="", state="")
    assert channel.dialplan == DialplanLocation()
    assert channel.language == "en"


def test_stasis_start() -> None:
    event = parse_event(message("StasisStart", args=["inbound", "2000"], channel=channel_json()))
    assert isinstance(event, StasisStart)
    assert event.type == "StasisStart"
    assert event.application == APP
    assert event.args == ("inbound", "2000")
    assert event.channel.id == "1764324902.17"
    assert event.channel.caller_number == "5551000"
    assert event.replace_channel is None


def test_stasis_start_with_replace_channel_and_no_args() -> None:
    event = parse_event(message("StasisStart", channel=channel_json("new.1"), replace_channel=channel_json("old.1")))
    assert isinstance(event, StasisStart)
    assert event.args == ()
    assert event.replace_channel is not None
    assert event.replace_channel.id == "old.1"


def test_bytes_message() -> None:
    event = parse_event(message("StasisEnd", channel=channel_json()).encode())
    assert isinstance(event, StasisEnd)
    assert event.channel.id == "1764324902.17"


def test_channel_state_change() -> None:
    event = parse_event(message("ChannelStateChange", channel=channel_json(state="Up")))
    assert isinstance(event, ChannelStateChange)
    assert event.channel.state == "Up"


@pytest.mark.parametrize("digit", list("0123456789ABCD*#"))
def test_dtmf_received(digit: str) -> None:
    event = parse_event(message("ChannelDtmfReceived", digit=digit, duration_ms=120, channel=channel_json()))
    assert isinstance(event, ChannelDtmfReceived)
    assert event.digit == digit
    assert event.duration_ms == 120
    assert event.channel.id == "1764324902.17"


def test_hangup_request() -> None:
    event = parse_event(message("ChannelHangupRequest", cause=16, soft=False, channel=channel_json()))
    assert isinstance(event, ChannelHangupRequest)
    assert event.cause == 16


def test_channel_destroyed() -> None:
    event = parse_event(message("ChannelDestroyed", cause=17, cause_txt="User busy", channel=channel_json()))
    assert isinstance(event, ChannelDestroyed)
    assert (event.cause, event.cause_txt) == (17, "User busy")


def test_channel_entered_and_left_bridge() -> None:
    entered = parse_event(message("ChannelEnteredBridge", bridge=bridge_json("br-1"), channel=channel_json()))
    assert isinstance(entered, ChannelEnteredBridge)
    assert (entered.bridge_id, entered.channel.id) == ("br-1", "1764324902.17")
    left = parse_event(message("ChannelLeftBridge", bridge=bridge_json("br-2"), channel=channel_json("c2")))
    assert isinstance(left, ChannelLeftBridge)
    assert (left.bridge_id, left.channel.id) == ("br-2", "c2")


def test_bridge_destroyed() -> None:
    event = parse_event(message("BridgeDestroyed", bridge=bridge_json("br-9")))
    assert isinstance(event, BridgeDestroyed)
    assert event.bridge_id == "br-9"


def test_playback_started_and_finished() -> None:
    playback = {"id": "aa-pb-1", "media_uri": "sound:hello-world", "target_uri": "channel:c1", "language": "en"}
    started = parse_event(message("PlaybackStarted", playback={**playback, "state": "playing"}))
    assert isinstance(started, PlaybackStarted)
    assert (started.playback_id, started.target_uri) == ("aa-pb-1", "channel:c1")
    finished = parse_event(message("PlaybackFinished", playback={**playback, "state": "done"}))
    assert isinstance(finished, PlaybackFinished)
    assert (finished.playback_id, finished.target_uri, finished.state) == ("aa-pb-1", "channel:c1", "done")


def test_dial() -> None:
    event = parse_event(message("Dial", dialstatus="ANSWER", dialstring="agent1", peer=channel_json("peer.1"),
                                caller=channel_json("caller.1")))
    assert isinstance(event, Dial)
    assert event.dialstatus == "ANSWER"
    assert event.peer.id == "peer.1"


def test_recording_finished_and_failed() -> None:
    recording = {"name": "aa-rec-1", "format": "wav", "target_uri": "bridge:br-1", "duration": 3}
    finished = parse_event(message("RecordingFinished", recording={**recording, "state": "done"}))
    assert isinstance(finished, RecordingFinished)
    assert (finished.name, finished.target_uri) == ("aa-rec-1", "bridge:br-1")
    failed = parse_event(message("RecordingFailed", recording={**recording, "state": "failed", "cause": "disk"}))
    assert isinstance(failed, RecordingFailed)
    assert (failed.name, failed.target_uri, failed.cause) == ("aa-rec-1", "bridge:br-1", "disk")


def test_application_replaced() -> None:
    event = parse_event(message("ApplicationReplaced"))
    assert isinstance(event, ApplicationReplaced)
    assert event.application == APP


def test_unknown_event_keeps_the_raw_message() -> None:
    raw = message("ChannelVarset", variable="X", value="1", channel=channel_json())
    event = parse_event(raw)
    assert type(event) is UnknownEvent
    assert event.type == "ChannelVarset"
    assert event.application == APP
    assert event.raw == json.loads(raw)


def test_event_without_application() -> None:
    event = parse_event(json.dumps({"type": "StasisEnd", "channel": channel_json()}))
    assert isinstance(event, StasisEnd)
    assert event.application == ""


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("", "not JSON"),
        ("{type: StasisStart}", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"StasisStart"', "not a JSON object"),
        ("{}", "event without type"),
        ('{"type": ""}', "event without type"),
        ('{"type": 5}', "event without type"),
        ('{"type": "StasisEnd", "application": 7}', "application is not a string"),
        (message("StasisStart", args=[]), "StasisStart without channel"),
        (message("StasisStart", args=[], channel="1764324902.17"), "StasisStart without channel"),
        (message("StasisEnd", channel=None), "StasisEnd without channel"),
        (message("ChannelStateChange", channel=["1764324902.17"]), "ChannelStateChange without channel"),
        (message("StasisStart", args=[], channel={"name": "PJSIP/x"}), "channel without id"),
        (message("StasisStart", args=[], channel={"id": ""}), "channel without id"),
        (message("StasisStart", args=[], channel={"id": 17}), "channel without id"),
        (message("StasisStart", args="inbound,2000", channel=channel_json()), "args is not a list of strings"),
        (message("StasisStart", args=["inbound", 2000], channel=channel_json()), "args is not a list of strings"),
        (message("StasisStart", args=[], channel=channel_json(), replace_channel={"id": None}), "channel without id"),
        (message("StasisEnd", channel={**channel_json(), "caller": "Alice"}), "channel caller is not an object"),
        (message("StasisEnd", channel={**channel_json(), "dialplan": ["from-trunk"]}), "dialplan is not an object"),
        (message("StasisEnd", channel={**channel_json(), "dialplan": {"priority": "n"}}), "priority is not a number"),
        (message("ChannelDtmfReceived", digit="E", duration_ms=100, channel=channel_json()), "not a DTMF digit"),
        (message("ChannelDtmfReceived", digit="12", duration_ms=100, channel=channel_json()), "not a DTMF digit"),
        (message("ChannelDtmfReceived", digit="", duration_ms=100, channel=channel_json()), "not a DTMF digit"),
        (message("ChannelDtmfReceived", duration_ms=100, channel=channel_json()), "without digit"),
        (message("ChannelDtmfReceived", digit="1", duration_ms="100", channel=channel_json()),
         "duration_ms is not a number"),
        (message("ChannelHangupRequest", cause="16", channel=channel_json()), "cause is not a number"),
        (message("ChannelHangupRequest", cause=True, channel=channel_json()), "cause is not a number"),
        (message("ChannelDestroyed", cause=None, cause_txt="", channel=channel_json()), "cause is not a number"),
        (message("ChannelEnteredBridge", channel=channel_json()), "ChannelEnteredBridge without bridge"),
        (message("ChannelLeftBridge", bridge={}, channel=channel_json()), "ChannelLeftBridge bridge without id"),
        (message("BridgeDestroyed", bridge={"id": 5}), "BridgeDestroyed bridge without id"),
        (message("PlaybackStarted", playback=[]), "PlaybackStarted without playback"),
        (message("PlaybackFinished", playback={"state": "done"}), "PlaybackFinished playback without id"),
        (message("Dial", dialstatus="ANSWER"), "Dial without peer"),
        (message("RecordingFailed", recording={"cause": "disk"}), "RecordingFailed recording without name"),
    ],
)
def test_malformed_messages_raise_value_error(raw: str | bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_event(raw)


def test_channel_id_of_channel_events() -> None:
    for raw in (
        message("StasisStart", args=[], channel=channel_json("c-1")),
        message("ChannelDtmfReceived", digit="5", duration_ms=90, channel=channel_json("c-1")),
        message("ChannelDestroyed", cause=16, cause_txt="Normal Clearing", channel=channel_json("c-1")),
        message("ChannelLeftBridge", bridge=bridge_json(), channel=channel_json("c-1")),
    ):
        assert channel_id_of(parse_event(raw)) == "c-1"


def test_channel_id_of_peer_event() -> None:
    assert channel_id_of(parse_event(message("Dial", dialstatus="RINGING", peer=channel_json("peer-7")))) == "peer-7"


def test_channel_id_of_events_without_channel() -> None:
    assert channel_id_of(parse_event(message("BridgeDestroyed", bridge=bridge_json()))) is None
    assert channel_id_of(parse_event(message("PlaybackStarted", playback={"id": "pb", "target_uri": "c"}))) is None
    assert channel_id_of(Event("Custom", APP)) is None
    unknown = parse_event(message("ChannelVarset", channel=channel_json("c-2")))
    assert channel_id_of(unknown) is None  # raw dict only: an unknown event is never dispatched to a channel


@pytest.mark.parametrize("data", [None, "1764324902.17", ["1764324902.17"], 17])
def test_channel_from_json_refuses_non_objects(data: object) -> None:
    with pytest.raises(ValueError, match="channel is not an object"):
        Channel.from_json(data)


# One realistic message of every typed event: a new Event class in events.py must be added here.
EVERY_EVENT: dict[str, dict[str, Any]] = {
    "StasisStart": {"args": ["inbound", "2000"], "channel": channel_json()},
    "StasisEnd": {"channel": channel_json()},
    "ChannelStateChange": {"channel": channel_json(state="Ringing")},
    "ChannelDtmfReceived": {"digit": "7", "duration_ms": 100, "channel": channel_json()},
    "ChannelHangupRequest": {"cause": 16, "channel": channel_json()},
    "ChannelDestroyed": {"cause": 16, "cause_txt": "Normal Clearing", "channel": channel_json()},
    "ChannelEnteredBridge": {"bridge": bridge_json(), "channel": channel_json()},
    "ChannelLeftBridge": {"bridge": bridge_json(), "channel": channel_json()},
    "BridgeDestroyed": {"bridge": bridge_json()},
    "PlaybackStarted": {"playback": {"id": "pb", "target_uri": "channel:c", "state": "playing"}},
    "PlaybackFinished": {"playback": {"id": "pb", "target_uri": "channel:c", "state": "done"}},
    "Dial": {"dialstatus": "BUSY", "peer": channel_json()},
    "RecordingFinished": {"recording": {"name": "r", "target_uri": "bridge:b", "state": "done"}},
    "RecordingFailed": {"recording": {"name": "r", "target_uri": "bridge:b", "state": "failed", "cause": "x"}},
    "ApplicationReplaced": {},
}


def test_every_event_class_is_parsed() -> None:
    classes = {
        value.__name__: value
        for value in vars(events).values()
        if isinstance(value, type) and issubclass(value, Event) and value not in (Event, UnknownEvent)
    }
    assert set(classes) == set(EVERY_EVENT), "EVERY_EVENT must hold one message of each typed event"
    for kind, fields in EVERY_EVENT.items():
        event = parse_event(message(kind, **fields))
        assert type(event) is classes[kind]
        assert (event.type, event.application) == (kind, APP)
