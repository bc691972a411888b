"""Placing a simulated call into the pbx and finding the worker's session for it."""

from __future__ import annotations

from asterisk_agent.calls.session import Session
from asterisk_agent.media.leg import MediaContext
from asterisk_agent.pbx.carrier.callers import Carrier, SimulatedCaller
from asterisk_agent.worker import Worker


async def dial(carrier: Carrier, media: MediaContext, number: str, did: str = "100") -> SimulatedCaller:
    """A caller from ``number`` to ``did``, answered, with its own media leg."""
    caller = await carrier.call(did, caller_number=number)
    await caller.wait_answered()
    await caller.attach_media(carrier, media)
    return caller


def session_of(worker: Worker, caller: SimulatedCaller) -> Session:
    """The worker's session for ``caller``, live or finished."""
    for session in [*worker.manager.sessions.values(), *worker.manager.finished]:
        if session.caller.caller_number == caller.caller_number:
            return session
    raise AssertionError(f"no session for {caller.caller_number}")
