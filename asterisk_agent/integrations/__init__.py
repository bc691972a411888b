"""Outbound requests to the backends dialog flows need (CRM, scheduling, banking), through one client that
bounds what the worker asks of each backend and always answers the flow, with a fallback when it can."""

from asterisk_agent.integrations.client import (
    IntegrationClient,
    UnknownEndpointError,
    loggable_path,
    new_idempotency_key,
)
from asterisk_agent.integrations.result import CircuitState, EndpointStats, IntegrationResult, Outcome
from asterisk_agent.integrations.settings import EndpointSettings

__all__ = [
    "CircuitState",
    "EndpointSettings",
    "EndpointStats",
    "IntegrationClient",
    "IntegrationResult",
    "Outcome",
    "UnknownEndpointError",
    "loggable_path",
    "new_idempotency_key",
]
