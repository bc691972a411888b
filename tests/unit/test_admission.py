"""Admission without Asterisk: which limits a call counts against, and slots as leases released once."""

from __future__ import annotations

import pytest

from asterisk_agent.admission.limits import Limit, endpoint_of, limits_for
from asterisk_agent.admission.slots import LocalAdmission
from asterisk_agent.config import OverflowConfig, Settings

BUSY = OverflowConfig()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def settings() -> Settings:
    return Settings(
        accounts={"clinic": {"numbers": ["201", "_21XX"], "max_concurrent_calls": 2,
                             "overflow": {"policy": "announce"}},
                  "bank": {"numbers": ["202"]}},
        trunks={"carrier": {"endpoints": ["carrier"], "max_concurrent_calls": 3},
                "tollfree": {"numbers": ["_21XX"], "max_concurrent_calls": 1,
                             "overflow": {"policy": "transfer", "transfer_to": "Local/s@operators"}}},
    )


@pytest.mark.parametrize(("name", "endpoint"), [
    ("PJSIP/carrier-0000001a", "carrier"), ("PJSIP/my-trunk-00000003", "my-trunk"), ("SIP/old-0000abcd", "old"),
    ("Local/201@from-trunk-00000001;2", None), ("PJSIP/carrier", None), ("", None),
])
def test_the_endpoint_comes_from_the_channel_name(name: str, endpoint: str | None) -> None:
    assert endpoint_of(name) == endpoint


def test_a_call_counts_against_its_account_and_every_trunk_it_arrives_on() -> None:
    conf = settings()
    clinic = limits_for(conf, "clinic", "2105", "PJSIP/carrier-00000001")
    assert [(limit.key, limit.maximum, limit.overflow.policy) for limit in clinic] == [
        ("account:clinic", 2, "announce"), ("trunk:carrier", 3, "announce"), ("trunk:tollfree", 1, "transfer")]
    bank = limits_for(conf, "bank", "202", "Local/202@x-00000001;2")
    assert bank == ()  # no account limit, no trunk matched


def test_slots_are_refused_at_the_limit_and_released_once() -> None:
    admission = LocalAdmission(Clock())
    limits = [Limit("account:a", 2, BUSY), Limit("trunk:t", 3, BUSY)]
    first = admission.admit(limits, lease_ms=1000, holder="session")
    second = admission.admit(limits, lease_ms=1000, holder="session")
    third = admission.admit(limits, lease_ms=1000, holder="session")
    assert first.admitted and second.admitted and not third.admitted
    assert third.refused_by == limits[0]
    other = admission.admit([Limit("trunk:t", 3, BUSY)], lease_ms=1000, holder="session")
    assert other.admitted and admission.in_use("trunk:t") == 3
    assert first.slot is not None and admission.release(first.slot.token)
    assert not admission.release(first.slot.token)  # twice: nothing more is freed
    assert admission.in_use("account:a") == 1 and admission.in_use("trunk:t") == 2
    assert admission.stats.refused == {"account:a": 1} and admission.stats.released == 1


def test_an_adopted_call_is_counted_even_over_the_limit() -> None:
    admission = LocalAdmission(Clock())
    limit = Limit("account:a", 0, BUSY)
    assert not admission.admit([limit], lease_ms=1000, holder="session").admitted
    assert admission.admit([limit], lease_ms=1000, holder="session", force=True).admitted
    assert admission.in_use("account:a") == 1


def test_a_lease_not_renewed_expires_and_frees_its_slot() -> None:
    clock = Clock()
    admission = LocalAdmission(clock)
    limit = Limit("account:a", 1, BUSY)
    held = admission.admit([limit], lease_ms=1000, holder="agi").slot
    assert held is not None
    clock.now += 0.9
    assert admission.renew(held.token, 1000)
    clock.now += 0.9
    assert not admission.admit([limit], lease_ms=1000, holder="agi").admitted  # renewed: still held
    clock.now += 0.2
    assert admission.admit([limit], lease_ms=1000, holder="agi").admitted  # expired: the slot is free again
    assert admission.stats.expired == 1
    assert not admission.release(held.token)  # its late release frees nothing more


def test_a_session_takes_over_the_slot_agi_admitted_it_to() -> None:
    clock = Clock()
    admission = LocalAdmission(clock)
    limit = Limit("account:a", 1, BUSY)
    slot = admission.admit([limit], lease_ms=500, holder="agi").slot
    assert slot is not None
    taken = admission.take_over(slot.token, channel_id="chan-1", lease_ms=60_000)
    assert taken is slot and taken.holder == "session" and admission.in_use("account:a") == 1  # counted once
    clock.now += 10  # past the AGI lease: the session's lease holds it
    assert admission.in_use("account:a") == 1
    assert admission.take_over(slot.token, channel_id="chan-2", lease_ms=60_000) is None  # not another call's
    assert admission.take_over("unknown", channel_id="chan-1", lease_ms=60_000) is None
    assert admission.release(slot.token) and admission.in_use("account:a") == 0


@pytest.mark.parametrize(("trunk", "message"), [
    ({"max_concurrent_calls": 1}, "needs endpoints or numbers"),
    ({"numbers": ["12a"], "max_concurrent_calls": 1}, "neither a number nor"),
    ({"endpoints": ["x"], "max_concurrent_calls": -1}, "greater than or equal to 0"),
])
def test_a_bad_trunk_is_refused_with_its_reason(trunk: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(trunks={"t": trunk})


def test_the_transfer_policy_needs_a_target() -> None:
    with pytest.raises(ValueError, match="needs transfer_to"):
        OverflowConfig(policy="transfer")
