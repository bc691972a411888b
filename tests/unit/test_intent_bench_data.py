"""The held-back phrasings of bench/intent_bench.py: they load, name only intents of the shipped flows, and none
of them is (after the scorer's own normalisation) one of the examples the flows train on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from asterisk_agent.dialog.flow import SHIPPED_FLOWS, Flow, load_flow
from asterisk_agent.speech.stt.grammars import words_of

HELDOUT = Path(__file__).resolve().parents[2] / "bench" / "data" / "intent_heldout.yaml"


def _normal(phrase: str) -> str:
    return " ".join(word.replace("'", "") for word in words_of(phrase))


@pytest.fixture(scope="module")
def heldout() -> dict[str, Any]:
    data = yaml.safe_load(HELDOUT.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def flows() -> dict[str, Flow]:
    return {path.stem: load_flow(path) for path in SHIPPED_FLOWS.glob("*.yaml")}


def test_loads_with_phrases_for_every_intent(heldout: dict[str, Any], flows: dict[str, Flow]) -> None:
    assert heldout, "no flow in the held-back set"
    for name, entry in heldout.items():
        assert set(entry) == {"in_scope", "out_of_scope"}, name
        for intent, phrases in entry["in_scope"].items():
            assert len(phrases) >= 12, f"{name}.{intent}: {len(phrases)} phrasings"
            assert all(isinstance(p, str) and p.strip() for p in phrases), f"{name}.{intent}"
        assert len(entry["out_of_scope"]) >= 15, name
        assert all(isinstance(p, str) and p.strip() for p in entry["out_of_scope"]), name
    # every shipped flow with intents is measured, each of its intents too
    for name, flow in flows.items():
        if flow.intents:
            assert name in heldout, f"flow {name} has intents but no held-back phrasings"
            assert set(heldout[name]["in_scope"]) == set(flow.intents), name


def test_names_only_shipped_flows_and_intents(heldout: dict[str, Any], flows: dict[str, Flow]) -> None:
    for name, entry in heldout.items():
        assert name in flows, f"no shipped flow named {name!r}"
        unknown = set(entry["in_scope"]) - set(flows[name].intents)
        assert not unknown, f"{name}: no such intents {sorted(unknown)}"


def test_no_phrase_is_a_training_example(heldout: dict[str, Any], flows: dict[str, Flow]) -> None:
    for name, entry in heldout.items():
        examples = {_normal(e) for intent in flows[name].intents.values() for e in intent.examples}
        phrases = [p for ps in entry["in_scope"].values() for p in ps] + list(entry["out_of_scope"])
        copied = [p for p in phrases if _normal(p) in examples]
        assert not copied, f"{name}: held-back phrases that are training examples: {copied}"
        normal = [_normal(p) for p in phrases]
        assert len(set(normal)) == len(normal), f"{name}: a phrase appears twice"
