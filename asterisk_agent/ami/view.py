"""Who may be rung, from AMI's point of view: pure state built from AMI messages, no I/O.

Messages are header mappings as Asterisk sends them (``{"Event": "QueueMemberStatus", "Queue": "agents",
...}``). Every queue event carries the member's whole state, so applying events in the order they arrive
always ends on the latest state: that is what lets the connection replay, over a fresh snapshot, the events
that came while the snapshot was being read (see :meth:`AvailabilityView.seed`).

Bad input never raises: a message missing what it needs, or holding a value we cannot read, is counted in
``bad_events``, logged at debug, and leaves the view as safe as we can make it (an unreadable state is
UNKNOWN, which nobody rings).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

log = logging.getLogger(__name__)

AmiMessage = Mapping[str, object]  # headers; a repeated header is a list of strings


class DeviceState(StrEnum):
    """Asterisk's device states, as AMI names them (``ast_devstate_str``)."""

    UNKNOWN = "UNKNOWN"
    NOT_INUSE = "NOT_INUSE"
    INUSE = "INUSE"
    BUSY = "BUSY"
    INVALID = "INVALID"
    UNAVAILABLE = "UNAVAILABLE"
    RINGING = "RINGING"
    RINGINUSE = "RINGINUSE"
    ONHOLD = "ONHOLD"


# Queue events give the member's state as a number: enum ast_device_state, in this order.
_BY_NUMBER = tuple(DeviceState)

# Only a device that says it is idle is free. UNKNOWN is not: Asterisk says UNKNOWN for a device it cannot
# vouch for (no contact, a channel driver without state), and ringing such an agent mid-call is the one
# mistake this module exists to prevent. A device that never reports state can still be dialled by a
# target that does not ask (the warm transfer's list of targets), or through a queue (app_queue rings
# UNKNOWN members).
FREE_STATES = frozenset({DeviceState.NOT_INUSE})

QUEUE_MEMBER_EVENTS = frozenset({"QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded", "QueueMember",
                                 "QueueMemberPenalty", "QueueMemberRinginuse"})


@dataclass(frozen=True)
class QueueMember:
    """One member of one queue. ``interface`` is what the queue dials (``PJSIP/agent1``), and what
    :meth:`AvailabilityView.free_members` returns."""

    queue: str
    interface: str
    name: str
    state_interface: str
    status: DeviceState
    paused: bool
    paused_reason: str = ""
    in_call: bool = False
    penalty: int = 0

    @property
    def free(self) -> bool:
        """Not paused, not on a queue call, and its device idle."""
        return not self.paused and not self.in_call and self.status in FREE_STATES

    def as_json(self) -> dict[str, object]:
        return {
            "interface": self.interface, "name": self.name, "state_interface": self.state_interface,
            "status": self.status.value, "paused": self.paused, "paused_reason": self.paused_reason,
            "in_call": self.in_call, "penalty": self.penalty, "free": self.free,
        }


@dataclass
class QueueState:
    name: str
    callers: int = 0  # callers waiting in the queue
    members: dict[str, QueueMember] = field(default_factory=dict)  # by interface, in the order they came


class BadMessage(ValueError):
    """A message we cannot use; the view is unchanged (or made safe) and the message counted."""


def _text(message: AmiMessage, key: str, *, default: str | None = None) -> str:
    value = message.get(key)
    if value is None:
        if default is not None:
            return default
        raise BadMessage(f"no {key} header")
    if not isinstance(value, str):
        raise BadMessage(f"{key} is {type(value).__name__}, not one text value")
    return value


def _integer(message: AmiMessage, key: str, *, default: int = 0) -> int:
    text = _text(message, key, default=str(default)).strip()
    try:
        return int(text or default)
    except ValueError:
        raise BadMessage(f"{key} is {text[:20]!r}, not a number") from None


def _flag(message: AmiMessage, key: str) -> bool:
    text = _text(message, key, default="0").strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise BadMessage(f"{key} is {text[:20]!r}, not 0 or 1")


def _status(message: AmiMessage) -> tuple[DeviceState, bool]:
    """The member's device state from its numeric Status; an unreadable one is UNKNOWN (and reported)."""
    text = _text(message, "Status", default="").strip()
    if text.isdigit() and int(text) < len(_BY_NUMBER):
        return _BY_NUMBER[int(text)], True
    return DeviceState.UNKNOWN, False


def device_state(text: str) -> tuple[DeviceState, bool]:
    """A device state by name; an unknown name (a newer Asterisk?) is UNKNOWN, reported as unreadable."""
    try:
        return DeviceState(text.strip().upper()), True
    except ValueError:
        return DeviceState.UNKNOWN, False


class AvailabilityView:
    """Queue members of the watched queues and device states, updated message by message.

    ``queues`` names the queues to keep; empty keeps every queue. Devices are all kept (one small entry
    each): the state of any endpoint can be asked for.
    """

    def __init__(self, queues: Collection[str] = ()) -> None:
        self.watched = frozenset(queues)
        self.queues: dict[str, QueueState] = {}
        self.devices: dict[str, DeviceState] = {}
        self.bad_events = 0
        self.events = 0  # messages applied (seed items included)

    def watches(self, queue: str) -> bool:
        return not self.watched or queue in self.watched

    # --- reading ------------------------------------------------------------------------------------------

    def device(self, device: str) -> DeviceState | None:
        """The last state Asterisk gave for ``device`` (``PJSIP/agent1``), None if it never gave one."""
        return self.devices.get(device)

    def can_ring(self, device: str) -> bool:
        """True only when Asterisk says the device is idle (NOT_INUSE). A device it never reported (no such
        endpoint, a typo) cannot be rung."""
        return self.devices.get(device) in FREE_STATES

    def free_members(self, queue: str) -> list[str] | None:
        """Interfaces of the queue's free members, in the queue's order; None for a queue not seen."""
        state = self.queues.get(queue)
        if state is None:
            return None
        return [member.interface for member in state.members.values() if member.free]

    def members(self, queue: str) -> list[QueueMember]:
        state = self.queues.get(queue)
        return list(state.members.values()) if state is not None else []

    # --- writing ------------------------------------------------------------------------------------------

    def clear(self) -> None:
        self.queues.clear()
        self.devices.clear()

    def seed(self, queue_status: Iterable[AmiMessage], device_states: Iterable[AmiMessage],
             since: Iterable[AmiMessage] = ()) -> None:
        """Replace the whole view with a snapshot: the items of QueueStatus and DeviceStateList answers, then
        ``since``, the events that arrived while the snapshot was read, in their order. An event older than
        the snapshot is always followed by a later one for the same member or device, so the replay ends on
        the latest state whatever the interleaving."""
        self.clear()
        for message in (*queue_status, *device_states, *since):
            self.apply(message)

    def apply(self, message: AmiMessage) -> bool:
        """Apply one event or list item; True when it was one we follow. Never raises."""
        event = message.get("Event")
        if not isinstance(event, str):
            self._bad(message, "no Event header")
            return False
        try:
            handled = self._apply(event, message)
        except BadMessage as exc:
            self._bad(message, str(exc))
            return False
        if handled:
            self.events += 1
        return handled

    def _apply(self, event: str, message: AmiMessage) -> bool:
        if event == "DeviceStateChange":
            device = _text(message, "Device")
            state, readable = device_state(_text(message, "State"))
            self.devices[device] = state
            if not readable:
                raise BadMessage(f"unknown device state for {device}")
            return True
        if event in ("QueueParams", "QueueCallerJoin", "QueueCallerLeave", "QueueMemberRemoved") or (
            event in QUEUE_MEMBER_EVENTS
        ):
            queue = _text(message, "Queue")
            if not self.watches(queue):
                return False
            return self._apply_queue(event, queue, message)
        return False

    def _apply_queue(self, event: str, queue: str, message: AmiMessage) -> bool:
        if event == "QueueParams":
            self._queue(queue).callers = _integer(message, "Calls")
            return True
        if event in ("QueueCallerJoin", "QueueCallerLeave"):
            self._queue(queue).callers = max(0, _integer(message, "Count"))
            return True
        # QueueStatus lists a member as Location/Name; the events name it Interface/MemberName.
        interface = _text(message, "Interface", default="") or _text(message, "Location", default="")
        if not interface:
            raise BadMessage("no Interface or Location header")
        state = self._queue(queue)
        if event == "QueueMemberRemoved":
            state.members.pop(interface, None)
            return True
        status, readable = _status(message)
        try:
            member = QueueMember(
                queue=queue, interface=interface,
                name=_text(message, "MemberName", default="") or _text(message, "Name", default="") or interface,
                state_interface=_text(message, "StateInterface", default="") or interface,
                status=status, paused=_flag(message, "Paused"),
                paused_reason=_text(message, "PausedReason", default=""),
                in_call=_flag(message, "InCall"), penalty=_integer(message, "Penalty"),
            )
        except BadMessage:
            # Its state changed and we cannot read to what: nobody rings it until a readable event comes.
            old = state.members.get(interface)
            if old is not None:
                state.members[interface] = replace(old, status=DeviceState.UNKNOWN)
            raise
        state.members[interface] = member  # every member event carries the whole state
        if not readable:
            raise BadMessage(f"unreadable Status for {interface} in {queue}")
        return True

    def _queue(self, name: str) -> QueueState:
        state = self.queues.get(name)
        if state is None:
            state = self.queues[name] = QueueState(name)
        return state

    def _bad(self, message: AmiMessage, why: str) -> None:
        self.bad_events += 1
        log.debug("AMI: ignored a message we cannot use (%s): event %r", why, message.get("Event"))
