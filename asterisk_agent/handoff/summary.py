"""What a person taking over a call is told: spoken to the agent alone before the caller joins (the whisper),
and sent to the agent's desktop or CRM (the screen-pop). Sensitive slots never appear in either."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asterisk_agent.dialog.slots import spoken

if TYPE_CHECKING:
    from asterisk_agent.calls.session import Session

REASONS = {
    "caller_asked": "the caller asked for a person",
    "low_confidence": "I could not understand the caller well enough",
    "sensitive_topic": "the caller raised a sensitive matter",
    "frustration": "the caller sounds frustrated",
    "limit": "the call reached one of its limits",
    "flow": "the flow hands such calls to people",
}
SUGGESTIONS = {
    "caller_asked": ["greet the caller and ask how you can help"],
    "low_confidence": ["confirm what the caller wants", "check the collected details"],
    "sensitive_topic": ["follow the sensitive-case procedure", "verify the caller's identity"],
    "frustration": ["apologise for the wait", "resolve the request directly"],
    "limit": ["pick up where the call stopped"],
}


def _reason_key(reason: str) -> str:
    return reason.split(":", maxsplit=1)[0].strip()


def _collected(session: Session) -> dict[str, str]:
    run = session.dialog
    if run is None:
        return {}
    return {name: spoken(value) for name, value in run.values.items()
            if name in run.flow.slots and name not in run.sensitive}


def agent_summary(session: Session, reason: str) -> str:
    """A few spoken sentences: who the caller is for, why they are handed over, what they gave and said last."""
    parts = [f"A caller for {session.account}.", f"Reason: {REASONS.get(_reason_key(reason), reason)}."]
    collected = _collected(session)
    if collected:
        parts.append("They gave " + ", ".join(f"{name.replace('_', ' ')} {value}"
                                               for name, value in collected.items()) + ".")
    said = [turn.text for turn in session.transcript
            if turn.speaker == "caller" and turn.text and turn.text != "(masked)" and not turn.text.startswith("keys:")]
    if said:
        parts.append(f"They last said: {said[-1]}")
    return " ".join(parts)


def screen_pop(session: Session, stage: str, target: str, reason: str) -> dict[str, Any]:
    """The screen-pop's data: caller, intent tags, the transcript so far, slots (sensitive ones masked) and
    suggested actions."""
    run = session.dialog
    intents = sorted({turn.intent for turn in run.turns if turn.intent}) if run is not None else []
    return {
        "stage": stage, "target": target, "reason": _reason_key(reason),
        "caller_number": session.caller.caller_number or None, "caller_name": session.caller.caller_name or None,
        "did": session.did, "intents": intents,
        "slots": run.masked_values() if run is not None else {},
        "transcript": [{"speaker": turn.speaker, "text": turn.text, "at_ms": turn.start_ms}
                       for turn in session.transcript],
        "suggested_actions": SUGGESTIONS.get(_reason_key(reason), []),
    }
