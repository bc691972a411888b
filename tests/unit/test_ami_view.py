"""The AMI availability view: AMI messages recorded from a real Asterisk in, who may be rung out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from asterisk_agent.ami.view import AvailabilityView, DeviceState

RECORDED: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "ami_recorded.json").read_text(encoding="utf-8"))


def items(name: str) -> list[dict[str, Any]]:
    """The items of a recorded list answer (without its Response and ...Complete)."""
    return RECORDED[name][1:-1]


def seeded(queues: tuple[str, ...] = ("agents",)) -> AvailabilityView:
    view = AvailabilityView(queues)
    view.seed(items("queue_status"), items("device_state_list"))
    return view


def test_seed_from_queue_status_and_device_state_list() -> None:
    view = seeded()
    assert [m.interface for m in view.members("agents")] == ["PJSIP/agent1", "PJSIP/agent2"]
    agent2 = view.members("agents")[1]
    assert agent2.paused and agent2.paused_reason == "lunch" and agent2.status is DeviceState.NOT_INUSE
    assert agent2.name == "agent2" and agent2.state_interface == "PJSIP/agent2"
    assert view.free_members("agents") == ["PJSIP/agent1"]  # agent2 is idle but paused
    assert view.device("PJSIP/agent1") is DeviceState.NOT_INUSE
    assert view.can_ring("PJSIP/agent4")
    assert view.queues["agents"].callers == 0
    assert view.bad_events == 0


def test_unknown_queue_and_device() -> None:
    view = seeded()
    assert view.free_members("sales") is None  # not "nobody": we know nothing of it
    assert view.device("PJSIP/nobody") is None
    assert not view.can_ring("PJSIP/nobody")


def test_pause_and_unpause_follow_events() -> None:
    view = seeded()
    for event in RECORDED["pause"]:  # agent2 unpaused, then agent1 paused ("break")
        view.apply(event)
    assert view.free_members("agents") == ["PJSIP/agent2"]
    agent1 = view.members("agents")[0]
    assert agent1.paused and agent1.paused_reason == "break"
    assert view.bad_events == 0


def test_a_queue_call_rings_then_uses_then_frees_its_agent() -> None:
    view = AvailabilityView(["agents"])
    view.seed(items("queue_status"), items("device_state_list"), RECORDED["pause"])
    view.apply({**RECORDED["pause"][3], "Paused": "0", "PausedReason": ""})  # agent1 back from its break
    assert view.free_members("agents") == ["PJSIP/agent1", "PJSIP/agent2"]
    seen = []
    for event in RECORDED["queue_call"]:
        view.apply(event)
        agent1 = view.members("agents")[0]
        seen.append((event["Event"], view.queues["agents"].callers, agent1.status.value, agent1.in_call,
                     view.device("PJSIP/agent1").value))  # type: ignore[union-attr]
    # The caller joins, agent1 rings, answers (on a queue call), hangs up.
    assert ("QueueCallerJoin", 1, "NOT_INUSE", False, "NOT_INUSE") in seen
    assert ("QueueMemberStatus", 1, "RINGING", False, "NOT_INUSE") in seen
    assert ("QueueMemberStatus", 0, "INUSE", True, "INUSE") in seen
    assert seen[-1] == ("QueueMemberStatus", 0, "NOT_INUSE", False, "NOT_INUSE")
    assert view.bad_events == 0


def test_every_member_state_but_idle_is_not_free() -> None:
    member_event = RECORDED["queue_call"][3]
    assert member_event["Event"] == "QueueMemberStatus"
    for number, state in enumerate(DeviceState):
        view = seeded()
        view.apply({**member_event, "Status": str(number), "InCall": "0", "Paused": "0"})
        assert view.members("agents")[0].status is state
        assert (view.free_members("agents") == ["PJSIP/agent1"]) is (state is DeviceState.NOT_INUSE), state


@pytest.mark.parametrize("state", list(DeviceState))
def test_only_an_idle_device_can_be_rung(state: DeviceState) -> None:
    view = seeded()
    view.apply({"Event": "DeviceStateChange", "Device": "PJSIP/agent1", "State": state.value})
    assert view.can_ring("PJSIP/agent1") is (state is DeviceState.NOT_INUSE)


def test_added_and_removed_members() -> None:
    view = AvailabilityView(["agents"])
    for event in RECORDED["added"]:
        view.apply(event)
    assert view.free_members("agents") == ["PJSIP/agent1"]
    for event in RECORDED["removed"]:
        view.apply(event)
    assert view.free_members("agents") == []
    view.apply(RECORDED["removed"][0])  # removing one that is not there changes nothing
    assert view.bad_events == 0


def test_unwatched_queues_are_ignored_and_empty_watches_all() -> None:
    other = {**RECORDED["added"][0], "Queue": "sales"}
    watching = AvailabilityView(["agents"])
    assert not watching.apply(other)
    assert watching.free_members("sales") is None
    everything = AvailabilityView()
    assert everything.apply(other)
    assert everything.free_members("sales") == ["PJSIP/agent1"]


def test_snapshot_replaces_the_view_and_held_events_replay_over_it() -> None:
    view = seeded()
    view.apply({"Event": "DeviceStateChange", "Device": "PJSIP/gone", "State": "INUSE"})
    # A snapshot where agent2 is paused, and events held while it was read: agent2 unpaused, agent1 paused.
    view.seed(items("queue_status"), items("device_state_list"), RECORDED["pause"])
    assert view.device("PJSIP/gone") is None  # what the new snapshot does not hold is forgotten
    assert view.free_members("agents") == ["PJSIP/agent2"]


BAD_MESSAGES = [
    {"Response": "Success"},  # no Event
    {"Event": 17},
    {"Event": "DeviceStateChange", "State": "INUSE"},  # no Device
    {"Event": "DeviceStateChange", "Device": ["PJSIP/a", "PJSIP/b"], "State": "INUSE"},  # repeated header
    {"Event": "QueueMemberStatus", "Interface": "PJSIP/agent1", "Status": "1"},  # no Queue
    {"Event": "QueueMemberStatus", "Queue": "agents", "Status": "1"},  # no Interface
    {"Event": "QueueCallerJoin", "Queue": "agents", "Count": "many"},
]


@pytest.mark.parametrize("message", BAD_MESSAGES)
def test_bad_messages_are_counted_and_change_nothing(message: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    view = seeded()
    before = (view.free_members("agents"), dict(view.devices), view.queues["agents"].callers)
    with caplog.at_level(logging.DEBUG, logger="asterisk_agent.ami.view"):
        assert view.apply(message) is False
    assert view.bad_events == 1
    assert (view.free_members("agents"), dict(view.devices), view.queues["agents"].callers) == before
    assert "ignored a message" in caplog.text


def test_an_unreadable_member_state_makes_it_not_free() -> None:
    """Its state changed and we cannot tell to what: nobody rings it until a readable event comes."""
    member_event = RECORDED["queue_call"][3]
    for bad in ({"Status": "99"}, {"Status": "busy"}, {"Paused": "maybe"}, {"InCall": "x"}, {"Penalty": "-"}):
        view = seeded()
        assert view.free_members("agents") == ["PJSIP/agent1"]
        view.apply({**member_event, "Status": "1", **bad})
        assert view.free_members("agents") == [], bad
        assert view.bad_events == 1
        view.apply({**member_event, "Status": "1"})
        assert view.free_members("agents") == ["PJSIP/agent1"]


def test_an_unknown_device_state_name_is_unknown() -> None:
    view = seeded()
    view.apply({"Event": "DeviceStateChange", "Device": "PJSIP/agent1", "State": "ON_A_BREAK"})
    assert view.device("PJSIP/agent1") is DeviceState.UNKNOWN
    assert not view.can_ring("PJSIP/agent1")
    assert view.bad_events == 1


def test_other_events_are_ignored_without_counting() -> None:
    view = seeded()
    assert view.apply({"Event": "Newchannel", "Channel": "PJSIP/agent1-00000001"}) is False
    assert view.apply({"Event": "QueueStatusComplete", "EventList": "Complete"}) is False
    assert view.bad_events == 0


def test_member_json_for_the_admin_view() -> None:
    member = seeded().members("agents")[1]
    assert member.as_json() == {
        "interface": "PJSIP/agent2", "name": "agent2", "state_interface": "PJSIP/agent2", "status": "NOT_INUSE",
        "paused": True, "paused_reason": "lunch", "in_call": False, "penalty": 0, "free": False,
    }
