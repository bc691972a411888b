"""A flow's integration calls performed by the shared :class:`IntegrationClient`, mapped per account from the
flow's integration names to configured endpoints."""

from __future__ import annotations

from collections.abc import Mapping

from asterisk_agent.dialog.driver import IntegrationCall
from asterisk_agent.dialog.engine import CallIntegration, CallOutcome, IntegrationAnswer
from asterisk_agent.integrations.client import IntegrationClient
from asterisk_agent.integrations.result import Outcome

_OUTCOMES = {Outcome.OK: CallOutcome.OK, Outcome.CACHED: CallOutcome.CACHED, Outcome.FAILED: CallOutcome.FAILED}


def integration_call(client: IntegrationClient, endpoints: Mapping[str, str]) -> IntegrationCall:
    """How one account's flow reaches its backends: ``endpoints`` maps the flow's integration names to the
    client's endpoint names (a name left out is its own endpoint)."""

    async def call(action: CallIntegration) -> IntegrationAnswer:
        result = await client.request(
            endpoints.get(action.integration, action.integration), action.method, action.path,
            json=action.body, params={key: str(value) for key, value in action.params.items()} or None,
            headers=action.headers or None, idempotency_key=action.idempotency_key if action.method != "GET" else None,
            cache_first=True,  # a caller is waiting: an answer from the cache now beats a live one seconds later
        )
        return IntegrationAnswer(_OUTCOMES[result.outcome], result.status, result.data, result.reason)

    return call
