"""Flow files: the shipped ones load, and every kind of mistake names the file, the line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterisk_agent.dialog.flow import SHIPPED_FLOWS, FlowError, load_flow, parse_flow, shipped_flow

MINIMAL = """\
name: tiny
start: ask
slots:
  day: {type: date}
states:
  ask:
    ask: Which day?
    slot: day
    next: done
  done:
    say: "See you on {day}."
    end: booked
"""


@pytest.mark.parametrize("name", ["clinic", "bank", "insurance"])
def test_every_shipped_flow_loads(name: str) -> None:
    flow = shipped_flow(name)
    assert flow.name == name
    assert flow.start in flow.states


def test_the_shipped_folder_holds_only_loadable_flows() -> None:
    files = sorted(SHIPPED_FLOWS.glob("*.yaml"))
    assert [path.stem for path in files] == ["bank", "clinic", "insurance"]
    for path in files:
        load_flow(path)


def test_a_minimal_flow_loads() -> None:
    flow = parse_flow(MINIMAL, "tiny.yaml")
    assert flow.states["ask"].kind == "ask"
    assert flow.states["done"].kind == "end"


def _error(text: str) -> str:
    with pytest.raises(FlowError) as caught:
        parse_flow(text, "flows/x.yaml")
    return str(caught.value)


@pytest.mark.parametrize(("change", "expected"), [
    # YAML that does not parse: the line of the problem
    (("    next: done\n", "    next: [done\n"), "flows/x.yaml:10: not valid YAML"),
    # an unknown key, on its own line
    (("    slot: day\n", "    slot: day\n    colour: blue\n"), "flows/x.yaml:9: states.ask.colour: unknown key"),
    # a target state that does not exist
    (("    next: done\n", "    next: finish\n"), "flows/x.yaml:9: states.ask.next: no state named 'finish'"),
    # a slot that is not defined
    (("    slot: day\n", "    slot: month\n"), "flows/x.yaml:8: states.ask.slot: no slot named 'month'"),
    # a template naming nothing known
    (('    say: "See you on {day}."\n', '    say: "See you on {dya}."\n'),
     "flows/x.yaml:11: states.done.say: {dya} names no slot"),
    # a wrong slot type
    (("{type: date}", "{type: colour}"), "flows/x.yaml:4: slots.day.type: Input should be"),
    # a start that is not a state
    (("start: ask\n", "start: begin\n"), "flows/x.yaml:2: start: no state named 'begin'"),
])
def test_each_mistake_names_file_line_and_reason(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in MINIMAL
    assert expected in _error(MINIMAL.replace(old, new, 1))


def test_a_state_doing_two_things_is_refused() -> None:
    text = MINIMAL.replace("    end: booked\n", "    end: booked\n    escalate: why\n")
    assert "flows/x.yaml:10: states.done: a state does one thing: it has end and escalate" in _error(text)


def test_an_unreachable_state_is_refused() -> None:
    text = MINIMAL + "  orphan:\n    say: Nobody comes here.\n    next: done\n"
    assert "flows/x.yaml:13: states.orphan: no state leads here" in _error(text)


def test_a_call_needs_somewhere_to_go_when_it_fails() -> None:
    text = MINIMAL.replace("    next: done\n", "    next: look\n", 1).replace("states:\n", """\
integrations: [api]
states:
  look:
    call: {integration: api, path: /x}
    on_ok: done
""")
    assert "states.look: a call state needs on_failed" in _error(text)


def test_a_call_to_an_undeclared_integration_is_refused() -> None:
    text = MINIMAL.replace("    next: done\n", "    next: look\n", 1).replace("states:\n", """\
states:
  look:
    call: {integration: api, path: /x}
    on_ok: done
    on_failed: done
""")
    assert "'api' is not listed in the flow's integrations" in _error(text)


def test_a_branch_needs_an_otherwise() -> None:
    text = MINIMAL.replace("    next: done\n", "    next: pick\n", 1).replace("states:\n", """\
states:
  pick:
    branch:
      - {if: day, next: done}
""")
    assert "states.pick.branch: the last branch needs no 'if'" in _error(text)


def test_all_mistakes_are_reported_at_once() -> None:
    text = MINIMAL.replace("next: done", "next: finish").replace("slot: day", "slot: month")
    message = _error(text)
    assert "no state named 'finish'" in message
    assert "no slot named 'month'" in message


def test_a_missing_file_and_a_non_mapping_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FlowError, match="cannot read"):
        load_flow(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(FlowError, match=r"list\.yaml:1: a flow is a mapping"):
        load_flow(tmp_path / "list.yaml")


def test_a_name_yaml_reads_as_a_boolean_is_explained() -> None:
    text = MINIMAL + "intents:\n  yes: {examples: [yes please, sure]}\n"
    assert "flows/x.yaml:13: intents: a name YAML reads as true/false" in _error(text)
