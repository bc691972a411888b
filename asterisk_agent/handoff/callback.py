"""The callback offer, when no agent answered: the caller says yes (or presses 1), confirms the number they
call from (or keys another) and names a time (or presses hash for as soon as possible). The request is stored
with the call and sent to the account's webhook through the outbox."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asterisk_agent.dialog.driver import CallSide, Keys, Utterance
from asterisk_agent.dialog.engine import Listen
from asterisk_agent.dialog.slots import find_time, find_yes_no, spoken

if TYPE_CHECKING:
    from asterisk_agent.calls.session import Session

OFFER = "We can call you back as soon as someone is free. Would you like that? Say yes, or press 1."
SAME_NUMBER = "Shall we call you on {number}? Say yes, or press 1."
NEW_NUMBER = "Please key the number to call, then the hash key."
WHEN = "When would you like the call? Say a time, or press the hash key for as soon as possible."
DONE = "Thank you. We will call you back. Goodbye."
NOT_WANTED = "Alright. Please call again later. Goodbye."
SILENCE_MS = 7000


@dataclass(frozen=True)
class CallbackRequest:
    number: str
    preferred_at: dt.datetime | None  # None: as soon as possible
    reason: str


async def _yes(side: CallSide, question: str) -> bool:
    await side.say(question, fixed=False)
    heard = await side.listen(Listen("callback", "yes_no", keys_max=1, silence_ms=SILENCE_MS))
    if isinstance(heard, Keys):
        return heard.keys == "1"
    if isinstance(heard, Utterance):
        return find_yes_no(heard.text) is True
    return False


def _at(time: dt.time, now: dt.datetime) -> dt.datetime:
    """The next time of day ``time`` is reached, in the worker's local time zone."""
    moment = now.replace(hour=time.hour, minute=time.minute, second=0, microsecond=0)
    return moment if moment > now else moment + dt.timedelta(days=1)


async def offer_callback(side: CallSide, session: Session, apology: str, reason: str) -> CallbackRequest | None:
    """Ask; ``None`` when the caller does not want a callback (or says nothing)."""
    await side.say(apology, fixed=True)
    if not await _yes(side, OFFER):
        await side.say(NOT_WANTED, fixed=True)
        return None
    number = session.caller.caller_number
    if not number or not await _yes(side, SAME_NUMBER.format(number=spoken(number))):
        await side.say(NEW_NUMBER, fixed=True)
        keyed = await side.listen(Listen("callback_number", "digits", keys_max=15, silence_ms=SILENCE_MS))
        number = keyed.keys if isinstance(keyed, Keys) else ""
    if not number:
        await side.say(NOT_WANTED, fixed=True)
        return None
    await side.say(WHEN, fixed=True)
    heard = await side.listen(Listen("callback_time", "time", keys_max=4, silence_ms=SILENCE_MS))
    preferred = None
    if isinstance(heard, Utterance):
        time = find_time(heard.text)
        preferred = _at(time, dt.datetime.now().astimezone()) if time is not None else None
    await side.say(DONE, fixed=True)
    return CallbackRequest(number, preferred, reason)
