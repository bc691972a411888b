"""The AMI connection and the availability owner task against a small scripted AMI server on loopback: the
orderings and failures a real Asterisk rarely shows on demand (events right behind a snapshot, a list cut
short, an action never answered, a refused list action)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from asterisk_agent.ami.availability import AgentAvailability
from asterisk_agent.ami.connection import AmiAuthError, AmiConnection, AmiConnectionLost, AmiError, _Redacting
from asterisk_agent.config import SAMPLE_AMI_SECRET, AmiConfig, Settings, deployment_problems

RECORDED: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "ami_recorded.json").read_text(encoding="utf-8"))
SECRET = "fake-ami-secret-4711"


def encode(message: dict[str, Any]) -> bytes:
    return "".join(f"{key}: {value}\r\n" for key, value in message.items()).encode() + b"\r\n"


class FakeAmi:
    """Answers Login, Ping, QueueAdd, QueueStatus and DeviceStateList from the recorded answers. Hooks:
    ``after_list`` (bytes written in the same packet right after a list's end), ``cut_lists`` (close the
    socket after a list's first item), ``refuse`` (actions answered with an Error), ``silent`` (never
    answered)."""

    def __init__(self) -> None:
        self.after_list: dict[str, bytes] = {}
        self.cut_lists = False
        self.refuse: set[str] = set()
        self.silent: set[str] = set()
        self.logins = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop(self) -> None:
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in raw.decode().strip().split("\r\n") if ": " in line)
                writer.write(self._answer(headers))
                if self.cut_lists and headers.get("Action") in ("QueueStatus", "DeviceStateList"):
                    writer.close()
                    return
                await writer.drain()
        writer.close()

    def _answer(self, headers: dict[str, str]) -> bytes:
        action, action_id = headers.get("Action", ""), headers.get("ActionID", "")
        if action in self.silent:
            return b""
        if action in self.refuse:
            return encode({"Response": "Error", "ActionID": action_id, "Message": "Permission denied"})
        if action == "Login":
            self.logins += 1
            if headers.get("Secret") != SECRET:
                return encode({"Response": "Error", "ActionID": action_id, "Message": "Authentication failed"})
            return encode({"Response": "Success", "ActionID": action_id, "Message": "Authentication accepted"})
        if action == "Ping":
            return encode({"Response": "Success", "ActionID": action_id, "Ping": "Pong"})
        if action == "QueueAdd":
            return encode({"Response": "Success", "ActionID": action_id, "Message": "Added interface to queue"})
        recorded = {"QueueStatus": "queue_status", "DeviceStateList": "device_state_list"}.get(action)
        if recorded is None:
            return encode({"Response": "Error", "ActionID": action_id, "Message": "Invalid/unknown command"})
        messages = [{**message, "ActionID": action_id} for message in RECORDED[recorded]]
        if self.cut_lists:
            return b"".join(encode(message) for message in messages[:2])
        return b"".join(encode(message) for message in messages) + self.after_list.get(action, b"")


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    server = FakeAmi()
    await server.start()
    yield server
    await server.stop()


def config(port: int, **overrides: Any) -> AmiConfig:
    values: dict[str, Any] = {"enabled": True, "port": port, "secret": SECRET, "queues": ["agents"],
                              "reconnect_min_ms": 10, "reconnect_max_ms": 50, "action_timeout_ms": 1000}
    return AmiConfig(**{**values, **overrides})


async def until(availability: AgentAvailability, predicate: Callable[[AgentAvailability], bool]) -> None:
    async with asyncio.timeout(5):
        await availability.wait_until(predicate)


async def connect(port: int, **kwargs: Any) -> AmiConnection:
    connection = AmiConnection("127.0.0.1", port, "asterisk-agent", SECRET, on_event=lambda m: None, **kwargs)
    await connection.open(2)
    return connection


async def test_a_queue_add_answer_resolves(fake: FakeAmi) -> None:
    """panoramisk alone takes "Added interface to queue" for the start of a list and waits for ever."""
    connection = await connect(fake.port)
    answer = await connection.send({"Action": "QueueAdd", "Queue": "agents", "Interface": "PJSIP/a"},
                                   expect_list=False)
    assert answer.success
    assert connection.version == "11.0.0"
    connection.close()
    connection.close()


async def test_a_list_answer_and_a_refused_list_action(fake: FakeAmi) -> None:
    connection = await connect(fake.port)
    answer = await connection.send({"Action": "DeviceStateList"}, expect_list=True)
    assert [m.get("Event") for m in answer][-1] == "DeviceStateListComplete"
    fake.refuse.add("DeviceStateList")
    refused = await connection.send({"Action": "DeviceStateList"}, expect_list=True)  # one message, at once
    assert not refused.success and refused["Message"] == "Permission denied"
    connection.close()


async def test_a_list_cut_short_fails_at_once_not_at_the_timeout(fake: FakeAmi) -> None:
    connection = await connect(fake.port, action_timeout_ms=30_000)
    fake.cut_lists = True
    with pytest.raises(AmiConnectionLost):
        async with asyncio.timeout(2):
            await connection.send({"Action": "QueueStatus"}, expect_list=True)
    assert connection.closed.done()
    with pytest.raises(AmiConnectionLost):
        await connection.send({"Action": "Ping"}, expect_list=False)


async def test_an_unanswered_action_times_out(fake: FakeAmi) -> None:
    connection = await connect(fake.port, action_timeout_ms=100)
    fake.silent.add("Ping")
    with pytest.raises(AmiError, match="no answer within 100 ms"):
        await connection.send({"Action": "Ping"}, expect_list=False)
    connection.close()


async def test_a_wrong_secret_is_an_auth_error(fake: FakeAmi) -> None:
    connection = AmiConnection("127.0.0.1", fake.port, "asterisk-agent", "wrong", on_event=lambda m: None)
    with pytest.raises(AmiAuthError, match="login refused"):
        await connection.open(2)
    assert connection.closed.done()


async def test_a_login_never_answered_times_out(fake: FakeAmi) -> None:
    fake.silent.add("Login")
    connection = AmiConnection("127.0.0.1", fake.port, "asterisk-agent", SECRET, on_event=lambda m: None)
    with pytest.raises(AmiError, match="no answer within 100 ms"):
        await connection.open(0.1)
    assert connection.closed.done()


async def test_nobody_listening_is_an_ami_error() -> None:
    with pytest.raises(AmiError, match="cannot connect"):
        await connect(1)


async def test_events_right_behind_the_snapshot_are_not_overwritten_by_it(fake: FakeAmi) -> None:
    """The snapshot says agent1 is free; in the same packet, right after it, an event pauses agent1. The
    event is newer and must win, though it is parsed before the snapshot's reader runs again."""
    pause = {**RECORDED["pause"][3], "PausedReason": "after the snapshot"}
    assert pause["Event"] == "QueueMemberPause" and pause["Interface"] == "PJSIP/agent1"
    fake.after_list["QueueStatus"] = encode(pause)
    availability = AgentAvailability(config(fake.port))
    await availability.start()
    try:
        await until(availability, lambda a: a.fresh)
        assert availability.free_members("agents") == []
        assert availability.state().queues["agents"][0].paused_reason == "after the snapshot"
    finally:
        await availability.stop()


async def test_a_refused_snapshot_keeps_the_view_stale(fake: FakeAmi) -> None:
    fake.refuse.add("DeviceStateList")
    availability = AgentAvailability(config(fake.port))
    await availability.start()
    try:
        await until(availability, lambda a: "refused DeviceStateList" in a.last_error)
        assert availability.connections >= 1 and availability.seeds == 0
        assert availability.can_ring_endpoint("PJSIP/agent1") is None
        fake.refuse.clear()
        await until(availability, lambda a: a.fresh)  # retried with backoff
        assert availability.can_ring_endpoint("PJSIP/agent1") is True
    finally:
        await availability.stop()


async def test_reconnects_after_a_drop_and_start_stop_are_idempotent(fake: FakeAmi) -> None:
    availability = AgentAvailability(config(fake.port))
    await availability.start()
    await availability.start()
    await until(availability, lambda a: a.fresh)
    fake.drop()
    await until(availability, lambda a: not a.fresh)
    await until(availability, lambda a: a.fresh)
    assert (availability.connections, availability.seeds, fake.logins) == (2, 2, 2)
    await availability.stop()
    await availability.stop()
    assert not availability.fresh and availability.can_ring_endpoint("PJSIP/agent1") is None
    await availability.start()  # a stopped one starts again
    await until(availability, lambda a: a.fresh)
    await availability.stop()


async def test_claims(fake: FakeAmi) -> None:
    availability = AgentAvailability(config(fake.port))
    await availability.start()
    try:
        await until(availability, lambda a: a.fresh)
        assert availability.free_members("agents") == ["PJSIP/agent1"]
        assert availability.claim("PJSIP/agent1")
        assert not availability.claim("PJSIP/agent1")
        assert availability.free_members("agents") == []
        assert availability.state().as_json()["claimed"] == ["PJSIP/agent1"]
        availability.release("PJSIP/agent1")
        availability.release("PJSIP/agent1")
        assert availability.free_members("agents") == ["PJSIP/agent1"]
        assert availability.claim("PJSIP/agent2")  # paused in the queue, but dialled directly its device decides
        assert not availability.claim("PJSIP/nobody")
    finally:
        await availability.stop()


def test_the_secret_is_cut_from_every_log_line(caplog: pytest.LogCaptureFixture) -> None:
    adapter = _Redacting(logging.getLogger("asterisk_agent.ami.protocol"), SECRET)
    with caplog.at_level(logging.DEBUG, logger="asterisk_agent.ami.protocol"):
        adapter.exception("Fail to send %r" % {"Action": "Login", "Secret": SECRET})  # noqa: UP031 - as panoramisk
        adapter.debug("message interpreted: %r", {"Secret": SECRET})
        adapter.info("%s %s", SECRET)  # a bad format string still logs, without the secret
    assert caplog.text.count("***") == 3
    assert SECRET not in caplog.text


def test_the_secret_is_in_no_repr() -> None:
    settings = config(5038)
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    with pytest.raises(ValueError) as error:
        AmiConfig(secret=SECRET + "\r\nAction: Originate")
    assert SECRET not in str(error.value)


def test_the_placeholder_secret_is_refused_off_loopback() -> None:
    assert AmiConfig().secret == SAMPLE_AMI_SECRET
    for host, enabled, refused in (("pbx.example", True, True), ("127.0.0.1", True, False),
                                   ("pbx.example", False, False)):
        errors, _ = deployment_problems(Settings(ami=AmiConfig(host=host, enabled=enabled)))
        assert any(error.startswith("ami.secret") for error in errors) is refused, (host, enabled)
    errors, _ = deployment_problems(Settings(ami=AmiConfig(host="pbx.example", enabled=True, secret=SECRET)))
    assert not errors
