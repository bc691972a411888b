"""The private test bed's configuration rendering: set_option, the port plan, and the pbx's rendered files.

No Asterisk is started here: rendering only writes files into a temporary home. (TestBed is used through its
module, so pytest never mistakes the class for a test class.)
"""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import pytest

from asterisk_agent.pbx import instances
from asterisk_agent.pbx.instances import AGENT_NAMES, SHIPPED_FILES, PortPlan, Ports, set_option
from asterisk_agent.pbx.root import PbxError

DIALPLAN = Path(__file__).resolve().parents[2] / "dialplan"

CONF = """\
; a comment at the top
[general]
enabled = yes
port = 5038 ; the AMI port
bindaddr = 127.0.0.1

[asterisk-agent]
;port = 1
secret=change-me   ; CHANGE this
member => PJSIP/agent1
deny = 0.0.0.0/0.0.0.0

[agent-trunk](!)
port = 7
"""


# --- set_option ----------------------------------------------------------------------------------------------------


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    old, new = before.splitlines(), after.splitlines()
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def test_set_option_replaces_in_the_right_section_only() -> None:
    after = set_option(CONF, "agent-trunk", "port", "9999")
    assert changed_lines(CONF, after) == [("port = 7", "port = 9999")]
    after = set_option(CONF, "general", "port", "6038")
    assert changed_lines(CONF, after) == [("port = 5038 ; the AMI port", "port = 6038 ; the AMI port")]


def test_set_option_keeps_comments_and_spacing() -> None:
    after = set_option(CONF, "asterisk-agent", "secret", "s3cret")
    assert changed_lines(CONF, after) == [("secret=change-me   ; CHANGE this", "secret=s3cret   ; CHANGE this")]
    assert after.startswith("; a comment at the top\n")
    assert ";port = 1\n" in after  # a commented-out option is neither matched nor touched


def test_set_option_with_arrow_syntax() -> None:
    after = set_option(CONF, "asterisk-agent", "member", "PJSIP/agent2")
    assert changed_lines(CONF, after) == [("member => PJSIP/agent1", "member => PJSIP/agent2")]


def test_set_option_does_not_match_a_longer_key() -> None:
    text = "[general]\nbindaddr = 0.0.0.0\nbind = 0.0.0.0:5060\n"
    assert set_option(text, "general", "bind", "127.0.0.1:5160") == (
        "[general]\nbindaddr = 0.0.0.0\nbind = 127.0.0.1:5160\n"
    )


def test_set_option_keeps_a_missing_final_newline() -> None:
    assert set_option("[general]\nport = 1", "general", "port", "2") == "[general]\nport = 2"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("general", "secret"),  # the key is only in another section
        ("asterisk-agent", "bindaddr"),
        ("asterisk-agent", "port"),  # only commented out there
        ("nowhere", "port"),  # no such section
        ("general", "missing"),
    ],
)
def test_set_option_raises_when_missing(section: str, key: str) -> None:
    with pytest.raises(PbxError, match=rf"cannot set {key} in \[{section}\]"):
        set_option(CONF, section, key, "x")


# --- the port plan ---------------------------------------------------------------------------------------------


def test_slot_zero_is_the_default_plan() -> None:
    plan = PortPlan.for_slot(0)
    assert plan.pbx == Ports(sip=5060, http=8088, ami=5038, rtp_start=10000, rtp_end=14999)
    assert plan.carrier.sip != plan.pbx.sip
    assert plan.folder_name == "inst"
    assert PortPlan.for_slot(3).folder_name == "inst-3"


def test_slots_never_share_ports() -> None:
    plans = [PortPlan.for_slot(slot) for slot in range(5)]
    assert [plan.slot for plan in plans] == [0, 1, 2, 3, 4]
    assert len({plan.folder_name for plan in plans}) == 5
    all_ports = [ports for plan in plans for ports in (plan.pbx, plan.carrier)]
    singles = [port for ports in all_ports for port in (ports.sip, ports.http, ports.ami)]
    assert len(singles) == len(set(singles)), "a SIP, HTTP or AMI port is used twice"
    ranges = [range(ports.rtp_start, ports.rtp_end + 1) for ports in all_ports]
    for rtp in ranges:
        assert 1024 <= rtp.start < rtp.stop - 1 <= 65535
        assert len(rtp) >= 1000
        assert not [port for port in singles if port in rtp], f"a signalling port lies in the RTP range {rtp}"
    for first, second in itertools.combinations(ranges, 2):
        assert first.stop <= second.start or second.stop <= first.start, f"RTP ranges {first} and {second} overlap"


@pytest.mark.parametrize("slot", [-1, 5, 100])
def test_bad_slot_raises(slot: int) -> None:
    with pytest.raises(PbxError, match="port slot must be 0-4"):
        PortPlan.for_slot(slot)


def test_slot_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTERISK_AGENT_PBX_SLOT", "2")
    assert PortPlan.from_env() == PortPlan.for_slot(2)
    monkeypatch.delenv("ASTERISK_AGENT_PBX_SLOT")
    assert PortPlan.from_env() == PortPlan.for_slot(0)


# --- rendering the pbx from the real dialplan folder -------------------------------------------------------------


@pytest.fixture
def bed(tmp_path: Path) -> instances.TestBed:
    return instances.TestBed.create(tmp_path, DIALPLAN, PortPlan.for_slot(3))


def render(bed: instances.TestBed) -> Path:
    bed.pbx.render_pbx(bed.dialplan, bed.plan.carrier)
    return bed.home / bed.plan.folder_name / "pbx" / "etc"


def test_every_shipped_file_is_rendered() -> None:
    assert set(SHIPPED_FILES) == {path.name for path in DIALPLAN.glob("*.conf")}


def test_render_changes_only_ports_and_passwords(bed: instances.TestBed) -> None:
    etc = render(bed)
    ports, creds = bed.plan.pbx, bed.pbx.credentials
    expected = {  # file -> the new value of every option that must change
        "pjsip.conf": {"bind": f"127.0.0.1:{ports.sip}"},
        "http.conf": {"bindport": str(ports.http)},
        "manager.conf": {"port": str(ports.ami), "secret": creds.ami_secret},
        "rtp.conf": {"rtpstart": str(ports.rtp_start), "rtpend": str(ports.rtp_end)},
        "ari.conf": {"password": creds.ari_password},
    }
    allowed_keys = {"bind", "bindport", "port", "rtpstart", "rtpend", "password", "secret"}
    for name in SHIPPED_FILES:
        shipped = (DIALPLAN / name).read_text().splitlines()
        rendered = (etc / name).read_text().splitlines()
        assert len(rendered) == len(shipped), f"{name}: lines were added or removed"
        changes: dict[str, str] = {}
        for number, (old, new) in enumerate(zip(shipped, rendered, strict=True), start=1):
            if old == new:
                continue
            key = re.split(r"\s*=", old, maxsplit=1)[0].strip()
            assert key in allowed_keys, f"{name}:{number}: {old!r} became {new!r}"
            assert re.split(r"\s*=", new, maxsplit=1)[0].strip() == key
            changes[key] = new.split("=", 1)[1].split(";", 1)[0].strip()
        assert changes == expected.get(name, {}), f"{name}: unexpected changes {changes}"


def test_rendered_passwords_replace_the_placeholders(bed: instances.TestBed) -> None:
    etc = render(bed)
    for name in SHIPPED_FILES:
        text = (etc / name).read_text()
        assert "change-me" not in "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith(";")
        ), f"{name} still has a placeholder secret"


def test_render_writes_the_local_trunk_and_common_files(bed: instances.TestBed) -> None:
    etc = render(bed)
    local = (etc / "pjsip_local.conf").read_text()
    assert f"contact = sip:127.0.0.1:{bed.plan.carrier.sip}\n" in local
    assert f"match = 127.0.0.1:{bed.plan.carrier.sip}\n" in local
    for agent in AGENT_NAMES:
        assert f"[{agent}](agent-endpoint)\n" in local
        assert f"contact = sip:{agent}@127.0.0.1:{bed.plan.carrier.sip}\n" in local
    assert "astetcdir => /inst/pbx/etc\n" in (etc / "asterisk.conf").read_text()
    for path in etc.iterdir():
        assert "@@" not in path.read_text(), f"{path.name} has an unfilled placeholder"
    for sub in ("run", "log", "db", "keys", "cache", "spool/recording", "spool/tmp"):
        assert (etc.parent / sub).is_dir()


def test_render_does_not_touch_the_dialplan_folder(bed: instances.TestBed) -> None:
    before = {path.name: path.read_bytes() for path in DIALPLAN.iterdir()}
    render(bed)
    assert {path.name: path.read_bytes() for path in DIALPLAN.iterdir()} == before


def test_render_refuses_a_dialplan_without_a_shipped_file(tmp_path: Path) -> None:
    dialplan = tmp_path / "dialplan"
    shutil.copytree(DIALPLAN, dialplan)
    (dialplan / "queues.conf").unlink()
    bed = instances.TestBed.create(tmp_path / "home", dialplan, PortPlan.for_slot(1))
    with pytest.raises(PbxError, match=r"has no queues\.conf"):
        bed.pbx.render_pbx(bed.dialplan, bed.plan.carrier)


def test_render_refuses_a_shipped_file_without_the_option(tmp_path: Path) -> None:
    dialplan = tmp_path / "dialplan"
    shutil.copytree(DIALPLAN, dialplan)
    http = dialplan / "http.conf"
    http.write_text(re.sub(r"(?m)^bindport.*\n", "", http.read_text()))
    bed = instances.TestBed.create(tmp_path / "home", dialplan, PortPlan.for_slot(1))
    with pytest.raises(PbxError, match=r"cannot set bindport in \[general\]"):
        bed.pbx.render_pbx(bed.dialplan, bed.plan.carrier)
