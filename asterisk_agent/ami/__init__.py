"""AMI (Asterisk's Manager Interface) over panoramisk: which human agents are free to be rung."""

from asterisk_agent.ami.availability import AgentAvailability, AvailabilityState
from asterisk_agent.ami.connection import AmiAuthError, AmiConnection, AmiError
from asterisk_agent.ami.view import AvailabilityView, DeviceState, QueueMember

__all__ = [
    "AgentAvailability", "AmiAuthError", "AmiConnection", "AmiError", "AvailabilityState", "AvailabilityView",
    "DeviceState", "QueueMember",
]
