"""Every ARI request the worker can build, checked against the ARI specification the private Asterisk ships.

The specification (Swagger 1.2) is read from the private Asterisk root (``.pbx/root``); when the root is not
built the spec checks are skipped (``make test`` builds it first). The pure checks at the end always run.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.requests import AriRequest
from asterisk_agent.pbx.root import default_home, root_dir

Operation = dict[str, Any]
Spec = dict[tuple[str, str], Operation]

# Sample arguments for every public builder: one or more calls whose arguments together cover every parameter
# (optional ones included). A new builder in requests.py must be added here, or test_every_builder_is_sampled
# fails. Parameters the specification calls mutually exclusive go in separate samples.
CH = "aa-ch-0a1b2c"
BR = "aa-br-3d4e5f"
PB = "aa-pb-6a7b8c"
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "asterisk_info": [{}],
    "asterisk_ping": [{}],
    "set_global_variable": [{"variable": "AGENT_ADMISSION_BY", "value": "agi"}],
    "get_global_variable": [{"variable": "AGENT_ADMISSION_BY"}],
    "list_applications": [{}],
    "get_application": [{"name": "asterisk-agent"}],
    "list_channels": [{}],
    "get_channel": [{"channel_id": CH}],
    "originate": [
        {  # into a Stasis application
            "endpoint": "PJSIP/2000@carrier", "channel_id": CH, "app": "asterisk-agent", "app_args": "inbound,2000",
            "caller_id": '"Alice" <5551000>', "timeout_s": 30, "other_channel_id": "aa-ch-other",
            "originator": "aa-ch-origin", "formats": "ulaw,alaw", "variables": {"CALLERID(name)": "Alice"},
        },
        {  # into the dialplan
            "endpoint": "PJSIP/operator", "channel_id": CH, "context": "agent-fallback", "extension": "2000",
            "priority": 2,
        },
    ],
    "create_channel": [
        {
            "endpoint": "PJSIP/agent1", "channel_id": CH, "app": "asterisk-agent", "app_args": "agent,1",
            "other_channel_id": "aa-ch-other", "originator": "aa-ch-origin", "formats": "slin16",
            "variables": {"AGENT": "agent1"},
        }
    ],
    "dial": [{"channel_id": CH, "caller": "aa-ch-caller", "timeout_s": 25}],
    "hangup": [{"channel_id": CH, "reason": "busy"}, {"channel_id": CH, "reason_code": 17}],
    "answer": [{"channel_id": CH}],
    "ring": [{"channel_id": CH}],
    "progress": [{"channel_id": CH}],
    "continue_in_dialplan": [
        {"channel_id": CH, "context": "agent-fallback", "extension": "2000", "priority": 3, "label": "retry"}
    ],
    "send_dtmf": [
        {"channel_id": CH, "dtmf": "0123456789ABCD*#", "duration_ms": 120, "between_ms": 80, "before_ms": 40}
    ],
    "play_on_channel": [{"channel_id": CH, "media": "sound:hello-world", "playback_id": PB, "lang": "fr"}],
    "start_channel_moh": [{"channel_id": CH, "moh_class": "default"}],
    "stop_channel_moh": [{"channel_id": CH}],
    "get_channel_variable": [{"channel_id": CH, "variable": "CALLERID(num)"}],
    "set_channel_variable": [{"channel_id": CH, "variable": "AGENT_STATE", "value": "greeting"}],
    "snoop": [
        {"channel_id": CH, "snoop_id": "aa-sn-1", "app": "asterisk-agent", "app_args": "snoop", "spy": "in",
         "whisper": "out"}
    ],
    "external_media": [
        {
            "channel_id": "aa-em-1", "app": "asterisk-agent", "external_host": "127.0.0.1:40000",
            "media_format": "ulaw", "app_args": "media", "encapsulation": "rtp", "transport": "udp",
            "direction": "both", "variables": {"AGENT_SESSION": "s1"},
        },
        {
            "channel_id": "aa-em-2", "app": "asterisk-agent", "external_host": "127.0.0.1:40002",
            "media_format": "slin16", "encapsulation": "audiosocket", "transport": "tcp",
        },
    ],
    "record_channel": [
        {"channel_id": CH, "name": "aa-rec-1", "media_format": "gsm", "max_duration_s": 60, "if_exists": "overwrite",
         "beep": True, "terminate_on": "#"}
    ],
    "list_bridges": [{}],
    "get_bridge": [{"bridge_id": BR}],
    "create_bridge": [
        {"bridge_id": BR, "bridge_type": "mixing,dtmf_events", "name": "call-1"},
        {"bridge_id": BR, "bridge_type": "holding"},
    ],
    "destroy_bridge": [{"bridge_id": BR}],
    "add_channel_to_bridge": [
        {"bridge_id": BR, "channel_id": CH, "role": "caller", "absorb_dtmf": True, "mute": False}
    ],
    "remove_channel_from_bridge": [{"bridge_id": BR, "channel_id": CH}],
    "start_bridge_moh": [{"bridge_id": BR, "moh_class": "default"}],
    "stop_bridge_moh": [{"bridge_id": BR}],
    "play_on_bridge": [{"bridge_id": BR, "media": "tone:ring", "playback_id": PB, "lang": "de"}],
    "record_bridge": [
        {"bridge_id": BR, "name": "aa-rec-2", "media_format": "wav", "max_duration_s": 120, "if_exists": "append",
         "beep": False, "terminate_on": "any"}
    ],
    "get_playback": [{"playback_id": PB}],
    "stop_playback": [{"playback_id": PB}],
    "stop_live_recording": [{"name": "aa-rec-1"}],
    "cancel_live_recording": [{"name": "aa-rec-1"}],
    "list_stored_recordings": [{}],
    "get_stored_recording_file": [{"name": "aa-rec-1"}],
    "delete_stored_recording": [{"name": "aa-rec-1"}],
}

# Arguments a builder deliberately leaves out of the request when they have this value.
OMITTED = {
    # Asterisk 18 has no direction parameter; "both" is the default everywhere, so it is not sent.
    ("external_media", "direction"): "both",
}


def _builders() -> dict[str, Callable[..., AriRequest]]:
    """Every public function of requests.py that returns an AriRequest."""
    found: dict[str, Callable[..., AriRequest]] = {}
    for name, function in inspect.getmembers(ari, inspect.isfunction):
        if name.startswith("_") or function.__module__ != ari.__name__:
            continue
        if typing.get_type_hints(function).get("return") is AriRequest:
            found[name] = function
    return found


BUILDERS = _builders()
CASES = [
    pytest.param(name, kwargs, id=f"{name}-{index}")
    for name, samples in sorted(SAMPLES.items())
    for index, kwargs in enumerate(samples)
]


def _spec_folder() -> Path:
    return root_dir(default_home()) / "usr" / "share" / "asterisk" / "rest-api"


@pytest.fixture(scope="module")
def spec() -> Spec:
    folder = _spec_folder()
    files = sorted(folder.glob("*.json"))
    if not files:
        pytest.skip(
            f"the ARI specification is not at {folder}: the private Asterisk root is not built "
            "(`make test` builds it; or run `asterisk-agent pbx build` as root)"
        )
    operations: Spec = {}
    for file in files:
        document = json.loads(file.read_text())
        for api in document.get("apis", []):
            for operation in api.get("operations", []):  # resources.json lists files, without operations
                operations[(operation["httpMethod"], api["path"])] = operation
    assert len(operations) > 50, f"suspiciously few ARI operations read from {folder}"
    return operations


def _exclusive_with(parameter: dict[str, Any]) -> set[str]:
    found = re.search(r"[Mm]utually exclusive with ([^.]*)", parameter.get("description") or "")
    return set(re.findall(r"'(\w+)'", found.group(1))) if found else set()


def check_request(request: AriRequest, spec: Spec) -> None:
    """Assert that ``request`` is a valid call of the ARI specification."""
    where = f"{request.method} {request.template}"
    operation = spec.get((request.method, request.template))
    assert operation is not None, f"{where} is not an operation of the ARI specification"
    params = {p["name"]: p for p in operation.get("parameters", [])}
    sent = {
        "path": set(request.path_params),
        "query": set(request.query),
        "body": set(request.body or {}),
    }

    placeholders = set(re.findall(r"\{(\w+)\}", request.template))
    assert sent["path"] == placeholders, f"{where}: path params {sent['path']} do not fill {placeholders}"

    for kind, names in sent.items():
        for name in names:
            assert name in params, f"{where}: {kind} parameter {name!r} is not declared by the specification"
            declared = params[name]["paramType"]
            assert declared == kind, f"{where}: {name!r} is sent as a {kind} parameter, declared as {declared}"

    for name, parameter in params.items():
        if parameter.get("required") or parameter["paramType"] == "path":
            assert name in sent[parameter["paramType"]], f"{where}: required parameter {name!r} is missing"

    rendered = request.query_strings()
    for name, value in request.query.items():
        parameter = params[name]
        data_type = parameter.get("dataType")
        if data_type == "boolean":
            assert isinstance(value, bool), f"{where}: {name} is boolean, got {value!r}"
        elif data_type in ("int", "long"):
            assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {name} is {data_type}"
        allowed = parameter.get("allowableValues") or {}
        if allowed.get("valueType") == "LIST":
            values = rendered[name].split(",") if parameter.get("allowMultiple") else [rendered[name]]
            for item in values:
                assert item in allowed["values"], f"{where}: {name}={item!r} is not one of {allowed['values']}"
        elif allowed.get("valueType") == "RANGE":
            number = int(rendered[name])
            assert number >= allowed.get("min", number), f"{where}: {name}={number} is below {allowed['min']}"
            assert number <= allowed.get("max", number), f"{where}: {name}={number} is above {allowed['max']}"

    present = sent["query"] | sent["body"]
    for name in present:
        clash = _exclusive_with(params[name]) & present
        assert not clash, f"{where}: {name!r} is mutually exclusive with {sorted(clash)}"


def _sent_values(request: AriRequest) -> list[object]:
    return [*request.path_params.values(), *request.query.values(), *(request.body or {}).values()]


def test_every_builder_is_sampled() -> None:
    assert len(BUILDERS) >= 40, "the builder discovery found too few functions"
    missing = sorted(set(BUILDERS) - set(SAMPLES))
    assert not missing, f"add sample arguments to SAMPLES for the new request builders: {missing}"
    stale = sorted(set(SAMPLES) - set(BUILDERS))
    assert not stale, f"SAMPLES names functions that are not request builders: {stale}"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_cover_every_parameter(name: str) -> None:
    parameters = set(inspect.signature(getattr(ari, name)).parameters)
    covered = set().union(*(set(kwargs) for kwargs in SAMPLES[name]))
    assert covered == parameters, f"{name}: samples leave out {sorted(parameters - covered)}"


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_every_argument_reaches_the_request(name: str, kwargs: dict[str, Any]) -> None:
    request = BUILDERS[name](**kwargs)
    assert isinstance(request, AriRequest)
    sent = _sent_values(request)
    for argument, value in kwargs.items():
        if OMITTED.get((name, argument)) == value:
            continue
        assert any(type(item) is type(value) and item == value for item in sent), (
            f"{name}({argument}={value!r}) is not in the request {request}"
        )


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_request_matches_the_specification(name: str, kwargs: dict[str, Any], spec: Spec) -> None:
    check_request(BUILDERS[name](**kwargs), spec)


def test_the_checker_refuses_bad_requests(spec: Spec) -> None:
    """The spec checks themselves catch each kind of mistake (so a pass above means something)."""
    good = ari.hangup(CH, reason="busy")
    check_request(good, spec)
    bad = [
        (AriRequest("POST", "/channels/{channelId}/hangup", {"channelId": CH}), "not an operation"),
        (AriRequest("PUT", "/channels/{channelId}", {"channelId": CH}), "not an operation"),
        (AriRequest("DELETE", "/channels/{channelId}", {"channel": CH}), "do not fill"),
        (AriRequest("DELETE", "/channels/{channelId}", {"channelId": CH}, {"cause": "16"}), "not declared"),
        (AriRequest("DELETE", "/channels/{channelId}", {"channelId": CH}, {"reason": "bored"}), "not one of"),
        (AriRequest("POST", "/channels", query={"endpoint": "PJSIP/1"}, body={"channelId": CH}), "declared as query"),
        (AriRequest("POST", "/channels", query={"app": "x"}), "required parameter 'endpoint'"),
        (AriRequest("POST", "/channels", query={"endpoint": "PJSIP/1", "app": "x", "context": "c"}), "exclusive"),
        (AriRequest("POST", "/bridges/{bridgeId}/addChannel", {"bridgeId": BR}, {"channel": CH, "mute": "yes"}),
         "boolean"),
        (AriRequest("POST", "/channels/{channelId}/dial", {"channelId": CH}, {"timeout": -5}), "below"),
    ]
    for request, message in bad:
        with pytest.raises(AssertionError, match=re.escape(message)):
            check_request(request, spec)


def test_validation_lists_match_the_specification(spec: Spec) -> None:
    def allowed(method: str, path: str, name: str) -> list[str]:
        parameter = next(p for p in spec[(method, path)]["parameters"] if p["name"] == name)
        return list(parameter["allowableValues"]["values"])

    assert set(ari.HANGUP_REASONS) <= set(allowed("DELETE", "/channels/{channelId}", "reason"))
    assert set(ari.SNOOP_DIRECTIONS) <= set(allowed("POST", "/channels/{channelId}/snoop/{snoopId}", "spy"))
    assert set(ari.SNOOP_DIRECTIONS) <= set(allowed("POST", "/channels/{channelId}/snoop/{snoopId}", "whisper"))
    bridge_type = next(p for p in spec[("POST", "/bridges/{bridgeId}")]["parameters"] if p["name"] == "type")
    for kind in ari.BRIDGE_TYPES:
        assert kind in bridge_type["description"], f"bridge type {kind!r} is not in the specification"


def test_every_validated_value_builds_a_valid_request(spec: Spec) -> None:
    for reason in ari.HANGUP_REASONS:
        check_request(ari.hangup(CH, reason=reason), spec)
    for spy in ari.SNOOP_DIRECTIONS:
        for whisper in ari.SNOOP_DIRECTIONS:
            check_request(ari.snoop(CH, snoop_id="aa-sn-1", app="a", spy=spy, whisper=whisper), spec)
    for kind in ari.BRIDGE_TYPES:
        check_request(ari.create_bridge(BR, bridge_type=kind), spec)


# --- pure checks: no specification needed --------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "hungup", "NORMAL", "normal "])
def test_hangup_refuses_unknown_reason(reason: str) -> None:
    with pytest.raises(ValueError, match="unknown hangup reason"):
        ari.hangup(CH, reason=reason)


def test_hangup_accepts_every_known_reason() -> None:
    for reason in ari.HANGUP_REASONS:
        assert ari.hangup(CH, reason=reason).query == {"reason": reason}
    assert ari.hangup(CH).query == {}


@pytest.mark.parametrize("dtmf", ["", "12x3", "a", "1 2", "E", "12\n"])
def test_send_dtmf_refuses_non_dtmf(dtmf: str) -> None:
    with pytest.raises(ValueError, match="not a DTMF string"):
        ari.send_dtmf(CH, dtmf)


@pytest.mark.parametrize(("spy", "whisper"), [("sideways", "none"), ("both", "loud"), ("IN", "none")])
def test_snoop_refuses_bad_direction(spy: str, whisper: str) -> None:
    with pytest.raises(ValueError, match="snoop directions"):
        ari.snoop(CH, snoop_id="aa-sn-1", app="a", spy=spy, whisper=whisper)


@pytest.mark.parametrize("bridge_type", ["", "mixer", "mixing,bogus", "mixing, holding", "MIXING"])
def test_create_bridge_refuses_bad_type(bridge_type: str) -> None:
    with pytest.raises(ValueError, match="unknown bridge type"):
        ari.create_bridge(BR, bridge_type=bridge_type)


def test_optional_arguments_left_out_are_not_sent() -> None:
    request = ari.originate("PJSIP/1", channel_id=CH, app="a")
    assert request.query == {"endpoint": "PJSIP/1", "channelId": CH, "app": "a"}
    assert request.body is None
    assert ari.external_media(channel_id=CH, app="a", external_host="h:1", media_format="ulaw").query == {
        "channelId": CH, "app": "a", "external_host": "h:1", "format": "ulaw", "encapsulation": "rtp",
        "transport": "udp",
    }


def test_query_strings_render_booleans_as_true_false() -> None:
    request = AriRequest("POST", "/x", query={"beep": True, "mute": False, "timeout": 30, "app": "a b"})
    assert request.query_strings() == {"beep": "true", "mute": "false", "timeout": "30", "app": "a b"}
    added = ari.add_channel_to_bridge(BR, CH, absorb_dtmf=True, mute=False).query_strings()
    assert added["absorbDTMF"] == "true"
    assert added["mute"] == "false"
    assert ari.record_channel(CH, name="r").query_strings()["beep"] == "false"


def test_path_percent_encodes_ids() -> None:
    assert ari.get_channel("1700000000.42").path == "/channels/1700000000.42"
    assert ari.get_channel("a/b c?d#e%f").path == "/channels/a%2Fb%20c%3Fd%23e%25f"
    assert ari.play_on_channel("ch/1", "sound:x", playback_id="pb 1").path == "/channels/ch%2F1/play/pb%201"
    assert ari.stop_live_recording("../etc").path == "/recordings/live/..%2Fetc/stop"
