"""The FastAGI routes of admission, for dialplans that use AGI (``[from-trunk-agi]`` in the shipped
extensions.conf):

- ``admit?did=NUMBER``: decides before anything answers and sets ``AGENT_ADMISSION`` (``admitted``,
  ``refused`` or ``unavailable``), ``AGENT_SLOT`` (the slot token the call hands to Stasis, so it is counted
  once) and, when refused, ``AGENT_OVERFLOW`` (busy, announce, transfer) with ``AGENT_OVERFLOW_SOUND`` and
  ``AGENT_OVERFLOW_DIAL`` for the ``[agent-overflow]`` context.
- ``release?token=TOKEN``: from the ``h`` extension; frees the slot unless the session already did (a slot is
  released once, whichever path comes first).
"""

from __future__ import annotations

import logging
from typing import Protocol

from asterisk_agent.admission.slots import LocalAdmission
from asterisk_agent.agi.request import AgiRequest
from asterisk_agent.agi.server import Handler
from asterisk_agent.calls.manager import AgiAdmission

log = logging.getLogger(__name__)


class Admitting(Protocol):
    admission: LocalAdmission

    def admit_before_stasis(self, did: str, channel_name: str, channel_id: str) -> AgiAdmission: ...


def admission_routes(manager: Admitting) -> dict[str, Handler]:
    async def admit(request: AgiRequest) -> None:
        env = request.env
        did = env.params.get("did") or env.extension
        decision = manager.admit_before_stasis(did, env.channel, env.uniqueid)
        await request.set_variable("AGENT_ADMISSION", decision.status)
        await request.set_variable("AGENT_SLOT", decision.token)
        if decision.overflow is not None:
            await request.set_variable("AGENT_OVERFLOW", decision.overflow.policy)
            await request.set_variable("AGENT_OVERFLOW_SOUND", decision.overflow.announcement)
            await request.set_variable("AGENT_OVERFLOW_DIAL", decision.overflow.transfer_to or "")

    async def release(request: AgiRequest) -> None:
        token = request.env.params.get("token") or next(iter(request.env.args), "")
        if token and manager.admission.release(token):
            log.info("slot released by the dialplan (call %s)", request.env.uniqueid)

    return {"admit": admit, "release": release}
