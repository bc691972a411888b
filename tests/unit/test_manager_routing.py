"""CallManager routing without Asterisk: which StasisStart events become sessions."""

from __future__ import annotations

from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.events import Channel, DialplanLocation, StasisStart
from asterisk_agent.calls.manager import CallManager, stasis_args
from asterisk_agent.config import Settings


def _channel(channel_id: str, app_data: str = "", state: str = "Ring") -> Channel:
    return Channel(channel_id, f"PJSIP/x-{channel_id}", state, dialplan=DialplanLocation(
        context="from-trunk", exten="100", priority=2, app_name="Stasis", app_data=app_data))


def _manager() -> CallManager:
    # The client is never used: none of these events may start a session.
    return CallManager(AriClient("http://127.0.0.1:9", "u", "p"), Settings(instance_id="aa"))


def test_our_own_channels_are_never_callers() -> None:
    manager = _manager()
    for kind in ("em", "snoop", "agent"):
        manager.handle(StasisStart("StasisStart", "asterisk-agent", _channel(f"aa-{kind}-1"), ("inbound", "100")))
    assert manager.sessions == {}
    assert manager.unroutable == 0


def test_stasis_start_without_inbound_args_is_not_a_caller() -> None:
    manager = _manager()
    manager.handle(StasisStart("StasisStart", "asterisk-agent", _channel("pbx-1.1"), ()))
    manager.handle(StasisStart("StasisStart", "asterisk-agent", _channel("pbx-1.2"), ("outbound", "100")))
    assert manager.sessions == {}
    assert manager.unroutable == 2


def test_stasis_args_read_back_from_the_dialplan_location() -> None:
    assert stasis_args(_channel("c", "asterisk-agent,inbound,100"), "asterisk-agent") == ("inbound", "100")
    assert stasis_args(_channel("c", "asterisk-agent, inbound, 2001"), "asterisk-agent") == ("inbound", "2001")
    assert stasis_args(_channel("c", "other-app,inbound,100"), "asterisk-agent") is None
    playing = Channel("c", "n", "Up", dialplan=DialplanLocation(app_name="Playback", app_data="hello"))
    assert stasis_args(playing, "asterisk-agent") is None
