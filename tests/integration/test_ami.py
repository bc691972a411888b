"""Agent availability over the real pbx's AMI: queue members added and paused at run time, an agent endpoint
rung and answered by a real call, AMI cut and stalled through a TCP proxy, bad bytes on the wire, a wrong
secret.

The queue is the shipped ``[agents]`` of dialplan/queues.conf, which has no members: each test adds the
members it needs (``QueueAdd``: PJSIP/agent1 and PJSIP/agent2, the test bed's agent endpoints) and removes
them after, so the shipped file stays what an administrator edits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from asterisk_agent.ami.availability import AgentAvailability
from asterisk_agent.ami.connection import AmiConnection
from asterisk_agent.ami.view import DeviceState
from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.ari.events import Event
from asterisk_agent.ari.stream import EventStream
from asterisk_agent.config import AmiConfig
from asterisk_agent.pbx.carrier.callers import Carrier
from asterisk_agent.pbx.instances import TestBed
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]

QUEUE = "agents"
MEMBERS = ("PJSIP/agent1", "PJSIP/agent2")
WAIT_S = 10.0

AvailabilityFactory = Callable[..., Awaitable[AgentAvailability]]


def ami_config(testbed: TestBed, **overrides: Any) -> AmiConfig:
    creds = testbed.pbx.credentials
    values: dict[str, Any] = {
        "enabled": True, "host": "127.0.0.1", "port": testbed.pbx.ports.ami, "username": creds.ami_user,
        "secret": creds.ami_secret, "queues": [QUEUE], "reconnect_min_ms": 20, "reconnect_max_ms": 200,
        "connect_timeout_ms": 2000, "action_timeout_ms": 2000,
    }
    return AmiConfig(**{**values, **overrides})


async def until(availability: AgentAvailability, predicate: Callable[[AgentAvailability], bool],
                what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            await availability.wait_until(predicate)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}: {availability.state().as_json()}") from None


async def action(admin: AmiConnection, **headers: str) -> None:
    answer = await admin.send(headers, expect_list=False)
    assert answer.success, f"{headers['Action']}: {answer.get('Message')}"


@pytest_asyncio.fixture(loop_scope="session")
async def ami_admin(testbed: TestBed) -> AsyncIterator[AmiConnection]:
    """The test's own AMI connection, for what an administrator or an agent's phone would do (QueueAdd,
    QueuePause). The queue's members are removed before (leftovers of a killed run) and after."""
    creds = testbed.pbx.credentials
    admin = AmiConnection("127.0.0.1", testbed.pbx.ports.ami, creds.ami_user, creds.ami_secret,
                          on_event=lambda message: None)
    await admin.open(5)

    async def remove_members() -> None:
        for interface in (*MEMBERS, "PJSIP/agent3"):
            await admin.send({"Action": "QueueRemove", "Queue": QUEUE, "Interface": interface}, expect_list=False)

    await remove_members()
    yield admin
    await remove_members()
    admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def make_availability(testbed: TestBed) -> AsyncIterator[AvailabilityFactory]:
    started: list[AgentAvailability] = []

    async def factory(*, fresh: bool = True, **overrides: Any) -> AgentAvailability:
        availability = AgentAvailability(ami_config(testbed, **overrides))
        started.append(availability)
        await availability.start()
        await availability.start()  # idempotent: still one owner task
        if fresh:
            await until(availability, lambda a: a.fresh, "the first snapshot")
        return availability

    yield factory
    for availability in started:
        await availability.stop()
        await availability.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def ami_proxy(testbed: TestBed) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", testbed.pbx.ports.ami)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_queue_members_seeded_then_followed(
    ami_admin: AmiConnection, make_availability: AvailabilityFactory
) -> None:
    await action(ami_admin, Action="QueueAdd", Queue=QUEUE, Interface="PJSIP/agent1", MemberName="agent1")
    await action(ami_admin, Action="QueueAdd", Queue=QUEUE, Interface="PJSIP/agent2", MemberName="agent2",
                 Paused="true", Reason="lunch")

    availability = await make_availability()
    assert availability.free_members(QUEUE) == ["PJSIP/agent1"]  # from the snapshot: agent2 is paused
    member = availability.state().queues[QUEUE][1]
    assert (member.interface, member.paused, member.paused_reason) == ("PJSIP/agent2", True, "lunch")
    assert availability.free_members("no-such-queue") is None

    await action(ami_admin, Action="QueuePause", Queue=QUEUE, Interface="PJSIP/agent2", Paused="false")
    await until(availability, lambda a: a.free_members(QUEUE) == list(MEMBERS), "agent2 unpaused")

    await action(ami_admin, Action="QueuePause", Queue=QUEUE, Interface="PJSIP/agent1", Paused="true")
    await until(availability, lambda a: a.free_members(QUEUE) == ["PJSIP/agent2"], "agent1 paused")

    await action(ami_admin, Action="QueueAdd", Queue=QUEUE, Interface="PJSIP/agent3")
    await until(availability, lambda a: a.free_members(QUEUE) == ["PJSIP/agent2", "PJSIP/agent3"], "agent3 added")
    await action(ami_admin, Action="QueueRemove", Queue=QUEUE, Interface="PJSIP/agent2")
    await until(availability, lambda a: a.free_members(QUEUE) == ["PJSIP/agent3"], "agent2 removed")
    assert availability.bad_events == 0


class _Channels:
    """The pbx-side app our test call is originated into (it does nothing but exist)."""

    async def connected(self) -> None:
        return None

    def disconnected(self) -> None:
        return None

    def handle(self, event: Event) -> None:
        return None


async def test_endpoint_state_follows_a_real_call(
    pbx_ari: AriClient, carrier: Carrier, make_availability: AvailabilityFactory
) -> None:
    availability = await make_availability()
    assert availability.can_ring_endpoint("PJSIP/agent1") is True
    assert availability.can_ring_endpoint("PJSIP/nobody") is False  # never reported: no such endpoint

    app = f"ami-test-{uuid.uuid4().hex[:8]}"
    stream = EventStream(pbx_ari, app, _Channels())
    task = asyncio.create_task(stream.run())
    try:
        async with asyncio.timeout(WAIT_S):
            await stream.wait_connected()
        await pbx_ari.send(ari.originate("PJSIP/agent1", channel_id=f"{app}-agent1", app=app))
        async with asyncio.timeout(WAIT_S):
            agent = await carrier.agent_calls.get()
        assert agent.endpoint == "agent1"
        # Dialled but not yet ringing: Asterisk still says NOT_INUSE. A claim covers that gap.
        assert availability.device_state("PJSIP/agent1") is DeviceState.NOT_INUSE
        assert availability.claim("PJSIP/agent1") is True
        assert availability.can_ring_endpoint("PJSIP/agent1") is False
        assert availability.claim("PJSIP/agent1") is False  # a second transfer does not get it
        availability.release("PJSIP/agent1")

        await carrier.client.send(ari.ring(agent.channel_id))
        await until(availability, lambda a: a.device_state("PJSIP/agent1") is DeviceState.RINGING, "ringing")
        assert availability.can_ring_endpoint("PJSIP/agent1") is False

        await agent.answer()
        await until(availability, lambda a: a.device_state("PJSIP/agent1") is DeviceState.INUSE, "in use")
        assert availability.can_ring_endpoint("PJSIP/agent1") is False
        assert availability.can_ring_endpoint("PJSIP/agent2") is True

        await agent.hangup()
        async with asyncio.timeout(WAIT_S):
            await agent.gone
        await until(availability, lambda a: a.can_ring_endpoint("PJSIP/agent1") is True, "idle after hangup")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert availability.bad_events == 0


async def test_dropped_ami_goes_stale_then_reconnects_and_reseeds(
    ami_admin: AmiConnection, ami_proxy: TcpProxy, make_availability: AvailabilityFactory
) -> None:
    await action(ami_admin, Action="QueueAdd", Queue=QUEUE, Interface="PJSIP/agent1")
    availability = await make_availability(port=ami_proxy.port)
    assert availability.free_members(QUEUE) == ["PJSIP/agent1"]
    assert (availability.connections, availability.seeds) == (1, 1)

    ami_proxy.cut()
    await until(availability, lambda a: not a.fresh, "the view to go stale")
    assert availability.can_ring_endpoint("PJSIP/agent1") is None
    assert availability.free_members(QUEUE) is None
    assert availability.claim("PJSIP/agent1") is False
    state = availability.state()
    assert not state.connected and not state.fresh and state.stale_for_ms is not None
    assert "lost" in state.last_error

    # Changes while AMI is away: their events are lost; the reseed must bring them in.
    await action(ami_admin, Action="QueuePause", Queue=QUEUE, Interface="PJSIP/agent1", Paused="true")
    await action(ami_admin, Action="QueueAdd", Queue=QUEUE, Interface="PJSIP/agent2")
    refused = ami_proxy.refused
    async with asyncio.timeout(WAIT_S):  # it keeps trying, with backoff
        await ami_proxy.wait_refused(refused + 2)
    assert availability.can_ring_endpoint("PJSIP/agent1") is None

    ami_proxy.heal()
    await until(availability, lambda a: a.fresh, "reconnected and reseeded")
    assert availability.free_members(QUEUE) == ["PJSIP/agent2"]
    assert availability.can_ring_endpoint("PJSIP/agent1") is True
    assert (availability.connections, availability.seeds) == (2, 2)
    assert availability.state().last_error == ""


async def test_a_silent_dead_link_is_found_by_ping(
    ami_proxy: TcpProxy, make_availability: AvailabilityFactory
) -> None:
    availability = await make_availability(port=ami_proxy.port, ping_interval_ms=200, action_timeout_ms=300)
    ami_proxy.stall()  # bytes stop; the socket stays open
    await until(availability, lambda a: not a.fresh, "the unanswered ping to mark the view stale")
    assert "Ping" in availability.last_error
    await until(availability, lambda a: a.fresh, "a new connection")
    assert availability.connections == 2


async def test_bad_bytes_on_the_wire_are_counted_not_fatal(
    ami_admin: AmiConnection, ami_proxy: TcpProxy, make_availability: AvailabilityFactory
) -> None:
    availability = await make_availability(port=ami_proxy.port)
    ami_proxy.inject(
        b"Event: QueueMemberStatus\r\nQueue: agents\r\nInterface: PJSIP/agent1\r\nStatus: lots\r\n\r\n"
        b"Event: DeviceStateChange\r\nState: INUSE\r\n\r\n"
        b"\x00\xff\xfe garbage without headers\r\n\r\n"
        b"Event: DeviceStateChange\r\nDevice: PJSIP/agent4\r\nState: SLEEPING\r\n\r\n"
    )
    await until(availability, lambda a: a.bad_events == 3, "three unusable messages counted")
    assert availability.fresh
    assert availability.can_ring_endpoint("PJSIP/agent4") is False  # an unreadable state is not idle
    await action(ami_admin, Action="QueueAdd", Queue=QUEUE, Interface="PJSIP/agent1")
    await until(availability, lambda a: a.free_members(QUEUE) == ["PJSIP/agent1"], "real events still followed")


async def test_a_wrong_secret_is_refused_and_never_logged(
    make_availability: AvailabilityFactory, caplog: pytest.LogCaptureFixture, testbed: TestBed
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    with caplog.at_level(logging.DEBUG):
        availability = await make_availability(fresh=False, secret=wrong)
        await until(availability, lambda a: "login refused" in a.last_error, "the login to be refused")
        assert availability.can_ring_endpoint("PJSIP/agent1") is None
        good = await make_availability()  # a whole connection's life at DEBUG, with the right secret
        assert good.fresh
        await good.stop()
    right = testbed.pbx.credentials.ami_secret
    for secret in (wrong, right):
        assert secret not in caplog.text
        assert secret not in repr(availability) + repr(good) + repr(ami_config(testbed, secret=secret))
        assert secret not in str(availability.state().as_json())


async def test_the_worker_runs_availability_when_enabled(make_worker, testbed: TestBed) -> None:
    assert AmiConfig().enabled is False  # off by default: a worker without ami has no availability
    worker = await make_worker(ami=ami_config(testbed).model_dump())
    assert worker.availability is not None
    await until(worker.availability, lambda a: a.fresh, "the worker's availability")
    assert worker.availability.can_ring_endpoint("PJSIP/agent1") is True
