"""Performs a :class:`DialogRun`'s actions for one call: speaks through the call, listens for the caller's next
input, calls integrations within the flow's wait limit (saying "one moment" when they are slow), and records
what happened. The call side is a small protocol, so the same driver runs a real call (the session) or a text
conversation (tests, the flow linter's dry run).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from asterisk_agent.dialog.engine import (
    Action,
    CallIntegration,
    CallOutcome,
    DialogEvent,
    DialogRun,
    Escalate,
    FillSlot,
    Hangup,
    IntegrationAnswer,
    Listen,
    Say,
)
from asterisk_agent.dialog.flow import Flow
from asterisk_agent.dialog.intent_embeddings import intent_scorer
from asterisk_agent.dialog.intents import IntentScoring
from asterisk_agent.dialog.rewording import judge_rewording

log = logging.getLogger(__name__)

HOLD_AFTER_MS = 700  # an integration slower than this: the caller hears the flow's hold message


@dataclass(frozen=True)
class Utterance:
    text: str
    confidence: float
    loudness_db: float | None = None


@dataclass(frozen=True)
class Keys:
    keys: str


@dataclass(frozen=True)
class Silence:
    pass


CallerInput = Utterance | Keys | Silence
IntegrationCall = Callable[[CallIntegration], Awaitable[IntegrationAnswer]]
SlotFiller = Callable[[FillSlot], Awaitable[str | None]]
ReplyRewording = Callable[[Say], Awaitable[str | None]]
FILL_WAIT_MS = 3000  # the most a caller waits for the language model's reading
REWORD_WAIT_MS = 1200  # the most a caller waits for a reworded reply before hearing the flow's own words


@dataclass(frozen=True)
class FlowSetup:
    """What an account's calls need to run its flow: the flow, its trained intent scorer, and how to reach
    its integrations."""

    flow: Flow
    scorer: IntentScoring
    integrations: IntegrationCall
    filler: SlotFiller | None = None  # a language model that reads slots the readers cannot
    rewording: ReplyRewording | None = None  # a language model that rewords the flow's replies
    reword_wait_ms: int = REWORD_WAIT_MS

    @classmethod
    def of(cls, flow: Flow, integrations: IntegrationCall, filler: SlotFiller | None = None,
           rewording: ReplyRewording | None = None, reword_wait_ms: int = REWORD_WAIT_MS, *,
           scorer: IntentScoring | None = None) -> FlowSetup:
        """Without ``scorer``, the flow's scorer is trained here, which blocks (the sentence model loads on first
        use, every example is embedded): on a running loop, use :meth:`load`."""
        if scorer is None:
            scorer = flow_scorer(flow)
        return cls(flow, scorer, integrations, filler, rewording, reword_wait_ms)

    @classmethod
    async def load(cls, flow: Flow, integrations: IntegrationCall, filler: SlotFiller | None = None,
                   rewording: ReplyRewording | None = None, reword_wait_ms: int = REWORD_WAIT_MS) -> FlowSetup:
        """:meth:`of` with the scorer trained in a thread, so the event loop never waits for the model."""
        scorer = await asyncio.to_thread(flow_scorer, flow)
        return cls.of(flow, integrations, filler, rewording, reword_wait_ms, scorer=scorer)


def flow_scorer(flow: Flow) -> IntentScoring:
    """The flow's intent scorer (MiniLM embeddings, or TF-IDF without the model), its confidence scaled to the
    flow's re-prompt line. Blocking."""
    return intent_scorer({name: intent.examples for name, intent in flow.intents.items()},
                         floor=flow.thresholds.reprompt)


class CallSide(Protocol):
    async def say(self, text: str, *, fixed: bool) -> None:
        """Speak ``text`` (``fixed``: the same on every call, so it may come from the prompt cache); returns
        when it was heard, or cut by the caller."""

    async def listen(self, listen: Listen) -> CallerInput:
        """The caller's next input: what they said (recognised), what they keyed, or silence."""

    def escalated(self, escalation: Escalate) -> None:
        """The flow asks for a human, with its reason."""


class DialogDriver:
    def __init__(self, run: DialogRun, side: CallSide, integrations: IntegrationCall, *,
                 hold_after_ms: int = HOLD_AFTER_MS, filler: SlotFiller | None = None,
                 fill_wait_ms: int = FILL_WAIT_MS, rewording: ReplyRewording | None = None,
                 reword_wait_ms: int = REWORD_WAIT_MS) -> None:
        self.run = run
        self.side = side
        self.integrations = integrations
        self.hold_after_ms = hold_after_ms
        self.filler = filler
        self.fill_wait_ms = fill_wait_ms
        self.rewording = rewording
        self.reword_wait_ms = reword_wait_ms

    async def drive(self) -> str:
        """Run the flow to its end; the outcome (``booked``, ``escalated:caller_asked``, ``limit:turns``...)."""
        return await self._perform(self.run.start())

    async def stop_at_limit(self, kind: str) -> str:
        """A limit the call side enforces (the call's maximum length) was reached: say and do what the flow
        says for limits."""
        return await self._perform(self.run.limit(kind))

    async def _perform(self, actions: list[Action]) -> str:
        while True:
            following: list[Action] = []
            for action in actions:
                if isinstance(action, Say):
                    await self._say(action)
                elif isinstance(action, Listen):
                    following = await self._react(await self.side.listen(action))
                elif isinstance(action, CallIntegration):
                    following = await self._call(action)
                elif isinstance(action, FillSlot):
                    following = self.run.filled(await self._fill(action))
                elif isinstance(action, Escalate):
                    self.side.escalated(action)
                elif isinstance(action, Hangup):
                    return action.outcome
            if not following:
                # A flow always ends with a hang-up; a list without one and without a next step is a bug.
                outcome = self.run.outcome or "error:flow stalled"
                log.error("flow %s stalled in state %s", self.run.flow.name, self.run.state)
                return outcome
            actions = following

    async def _react(self, heard: CallerInput) -> list[Action]:
        if isinstance(heard, Utterance):
            # The sentence model's forward pass takes milliseconds of CPU: in a thread, never on the loop.
            nearest = (await asyncio.to_thread(self.run.scorer.nearest, heard.text) if self.run.scores_intents()
                       else None)
            return self.run.heard(heard.text, heard.confidence, heard.loudness_db, nearest)
        if isinstance(heard, Keys):
            return self.run.keyed(heard.keys)
        return self.run.silence()

    async def _say(self, action: Say) -> None:
        if self.rewording is None or not action.rewordable:
            await self.side.say(action.text, fixed=action.fixed)
            return
        proposal: str | None = None
        try:
            async with asyncio.timeout(self.reword_wait_ms / 1000):
                proposal = await self.rewording(action)
        except TimeoutError:
            log.warning("flow %s: the language model took more than %d ms to reword", self.run.flow.name,
                        self.reword_wait_ms)
        except Exception as exc:  # the model is an aid: without it the caller hears the flow's own words
            log.warning("flow %s: the language model failed to reword: %s", self.run.flow.name,
                        type(exc).__name__)
        verdict = judge_rewording(action.text, action.facts, proposal)
        self.run.events.append(DialogEvent("reworded" if verdict.reworded else "kept_words",
                                           verdict.reason or "facts kept", self.run.state))
        await self.side.say(verdict.text, fixed=action.fixed and not verdict.reworded)

    async def _fill(self, action: FillSlot) -> str | None:
        if self.filler is None:
            return None
        try:
            async with asyncio.timeout(self.fill_wait_ms / 1000):
                return await self.filler(action)
        except TimeoutError:
            log.warning("flow %s: the language model took more than %d ms", self.run.flow.name, self.fill_wait_ms)
        except Exception as exc:  # the model is an aid: without it the caller is asked again
            log.warning("flow %s: the language model failed: %s", self.run.flow.name, type(exc).__name__)
        return None

    async def _call(self, action: CallIntegration) -> list[Action]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + action.wait_ms / 1000
        task = asyncio.ensure_future(self.integrations(action))
        try:
            done, _ = await asyncio.wait([task], timeout=min(self.hold_after_ms, action.wait_ms) / 1000)
            if not done:
                await self.side.say(self.run.flow.messages.hold, fixed=True)
            async with asyncio.timeout_at(deadline):
                answer = await task
        except TimeoutError:
            log.warning("flow %s: integration %s waited more than %d ms", self.run.flow.name, action.integration,
                        action.wait_ms)
            return self.run.limit("integration_wait")
        except Exception as exc:  # an integration client must not end the call: a failed answer instead
            log.warning("flow %s: integration %s failed: %s", self.run.flow.name, action.integration,
                        type(exc).__name__)
            answer = IntegrationAnswer(CallOutcome.FAILED, None, None, type(exc).__name__)
        finally:
            if not task.done():
                task.cancel()
        return self.run.answered(answer)
