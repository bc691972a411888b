"""The demo's scenario callers: each dials one of the three reference flows (clinic, bank, insurance), says or
keys its part, and is checked twice: by what the reference backend stored for it, and by what it heard
(transcribed after its call). A caller's facts (day, account, policy) are its own, so a mix-up between
callers shows in both checks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from asterisk_agent.backends.bank import SEED_ACCOUNTS
from asterisk_agent.backends.runner import ReferenceBackends
from asterisk_agent.media.frames import FRAME_MS, FRAME_SAMPLES
from asterisk_agent.pbx.carrier.callers import SimulatedCaller
from asterisk_agent.speech.stt.whisper_engine import WhisperBatcher
from asterisk_agent.speech.voice import Voice

SCENARIO_DIDS = {"clinic": "201", "bank": "202", "insurance": "203"}
QUIET_MS = 1200  # a reply is over after this much silence (the agent pauses 200 ms between pieces)
REPLY_TIMEOUT_S = 90
PATIENTS = ("Dana Lee", "Eve Park", "Sam Reed", "Ann Cole", "Tom Hart", "Joy Bell")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
POLICIES = ("1234", "5678")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DAMAGE = (("A branch cracked the kitchen window.", "window"), ("Hail dented the roof of my car.", "roof"),
          ("The wind blew down the garden fence.", "fence"), ("A pipe leaked under the sink.", "sink"))


@dataclass
class ScenarioOutcome:
    verified: bool
    detail: str  # what was checked, or what did not match
    heard: str  # the caller's last reply, transcribed
    voice_to_voice_ms: list[float]


class _Conversation:
    def __init__(self, caller: SimulatedCaller, voice: Voice, ears: WhisperBatcher) -> None:
        self.caller, self.voice, self.ears = caller, voice, ears
        self.last = 0
        self.latencies: list[float] = []
        self.reply_first = 0

    async def listen(self) -> None:
        self.reply_first, self.last = await self.caller.wait_reply(self.last + 1 if self.last else 0,
                                                                   quiet_ms=QUIET_MS, timeout_s=REPLY_TIMEOUT_S)

    async def say(self, text: str) -> None:
        """Say ``text`` and listen to the answer; when the agent reads it back ("... Is that right?"), say yes,
        as a caller would."""
        _, said_last = await self.caller.speak(await self.voice.prompt(text))
        self.last = said_last
        await self.listen()
        self.latencies.append((self.reply_first - said_last) * FRAME_MS)
        for _ in range(2):
            reply = await self.heard_since(self.reply_first)
            if "is that right" not in reply.lower():
                return
            _, said_last = await self.caller.speak(await self.voice.prompt("Yes, that's right."))
            self.last = said_last
            await self.listen()

    async def key(self, digits: str) -> None:
        self.last = max(self.last, self.caller.media_leg.tap.frames if self.caller.media_leg else 0)
        await self.caller.send_digits(digits)
        await self.listen()

    async def heard_since(self, frame: int) -> str:
        audio = self.caller.heard()[frame * FRAME_SAMPLES:]
        return (await self.ears.transcribe_8k(audio)).text


_HOURS = ("twelve", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven")
_MINUTES = {0: "o'clock", 15: "fifteen", 30: "thirty", 45: "forty five"}


def said_time(slot: str) -> str:
    """A slot time as a caller says it: "09:30" -> "nine thirty in the morning" (piper's "9 a.m." was heard
    as "90 and")."""
    time = dt.time.fromisoformat(slot)
    part = "in the morning" if time.hour < 12 else "in the afternoon"
    return f"{_HOURS[time.hour % 12]} {_MINUTES.get(time.minute, str(time.minute))} {part}"


def clinic_slot(index: int, today: dt.date, backends: ReferenceBackends) -> tuple[str, dt.date, str]:
    """The weekday, day and slot the ``index``-th clinic caller asks for: days with a free slot next week (the
    clinic is fully booked on the 1st of a month) taken in turn, then the next free slot of that day, so no two
    callers race for one slot."""
    days = []
    for name in WEEKDAY_NAMES:
        day = today + dt.timedelta(days=(WEEKDAY_NAMES.index(name) - today.weekday()) % 7 or 7)
        free = backends.clinic.free_slots(day)
        if free:
            days.append((name, day, free))
    if not days:
        raise RuntimeError("the clinic has no free slot on any weekday next week")
    name, day, free = days[index % len(days)]
    return name, day, free[(index // len(days)) % len(free)]


async def clinic(caller: SimulatedCaller, voice: Voice, ears: WhisperBatcher, backends: ReferenceBackends,
                 index: int) -> ScenarioOutcome:
    talk = _Conversation(caller, voice, ears)
    patient = PATIENTS[index % len(PATIENTS)]
    day_name, day, slot = clinic_slot(index, dt.date.today(), backends)
    await talk.listen()
    await talk.say("I would like to book an appointment.")
    await talk.say(f"On {day_name}, please.")
    await talk.say(f"At {said_time(slot)}, please.")
    await talk.say(f"My name is {patient}.")
    heard = await talk.heard_since(talk.reply_first)
    booked = [a for a in backends.clinic.appointments.values() if a.date == day and a.time == slot]
    # The booking is this caller's by its day and time (no other caller asks for them); the name is reported
    # as the agent understood it.
    verified = bool(booked) and "appointment" in heard.lower() and day_name.lower() in heard.lower()
    detail = (f"booked {day.isoformat()} {slot} for {booked[0].name!r} (said {patient!r})" if booked
              else f"no appointment stored for {day.isoformat()} {slot}")
    return ScenarioOutcome(verified, detail, heard, talk.latencies)


async def bank(caller: SimulatedCaller, voice: Voice, ears: WhisperBatcher, backends: ReferenceBackends,
               index: int) -> ScenarioOutcome:
    talk = _Conversation(caller, voice, ears)
    account = SEED_ACCOUNTS[index % len(SEED_ACCOUNTS)]
    await talk.listen()
    await talk.key(account.number)
    await talk.key(account.pin)
    await talk.key("1")
    heard = await talk.heard_since(talk.reply_first)
    whole = account.balance.split(".")[0].lstrip("-")
    verified = whole in heard.replace(",", "")
    return ScenarioOutcome(verified, f"balance of {account.holder} ({'minus ' if '-' in account.balance else ''}"
                           f"{whole})", heard, talk.latencies)


async def insurance(caller: SimulatedCaller, voice: Voice, ears: WhisperBatcher, backends: ReferenceBackends,
                    index: int) -> ScenarioOutcome:
    talk = _Conversation(caller, voice, ears)
    policy = POLICIES[index % len(POLICIES)]
    what, keyword = DAMAGE[index % len(DAMAGE)]
    await talk.listen()
    await talk.say(f"My policy number is {', '.join(DIGIT_WORDS[int(digit)] for digit in policy)}.")
    await talk.say(what)
    await talk.say("It happened yesterday.")  # a lone "Yesterday." was heard as "yes today"
    await talk.say("At home.")
    heard = await talk.heard_since(talk.reply_first)
    claims = [c for c in backends.insurance.claims.values()
              if c["policy"] == f"POL{policy}" and keyword in str(c["what"]).lower()]
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    verified = any(c["when"] == yesterday for c in claims) and "claim" in heard.lower()
    detail = f"claim {claims[-1]['claim_id']} on POL{policy}" if claims else f"no claim stored for POL{policy}"
    return ScenarioOutcome(verified, detail, heard, talk.latencies)


SCENARIOS = {"clinic": clinic, "bank": bank, "insurance": insurance}
