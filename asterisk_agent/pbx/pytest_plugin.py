"""pytest plugin: the private Asterisk test bed, started once per test session, and the leak audit.

Fixtures: ``testbed`` (both instances running), ``pbx_ari`` and ``carrier_ari`` (ARI clients), ``carrier``
(the simulated outside world), ``leak_audit`` (after the test: no channel or bridge left on either
instance). Ports come from ``ASTERISK_AGENT_PBX_SLOT`` (0-4) so two suites can run side by side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from asterisk_agent.ari import requests as ari
from asterisk_agent.ari.client import AriClient
from asterisk_agent.pbx.audit import audit
from asterisk_agent.pbx.carrier.callers import Carrier
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.pbx.root import asterisk_version, build_root, default_home


def pytest_report_header(config: pytest.Config) -> str:
    return f"asterisk: {asterisk_version(default_home())} (private test bed, {default_home()})"


ASTERISK_FIXTURES = frozenset({"testbed", "pbx_ari", "carrier_ari", "carrier"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that touches the test bed must end with the leak audit."""
    missing = [
        item.nodeid for item in items
        if ASTERISK_FIXTURES & set(getattr(item, "fixturenames", ())) and "leak_audit" not in item.fixturenames  # type: ignore[attr-defined]
    ]
    if missing:
        raise pytest.UsageError("tests touch Asterisk without the leak_audit fixture: " + ", ".join(missing))


@pytest.fixture(scope="session")
def testbed(pytestconfig: pytest.Config) -> Iterator[TestBed]:
    home = default_home()
    build_root(home)
    bed = TestBed.create(home, Path(pytestconfig.rootpath) / "dialplan")
    bed.start()
    try:
        yield bed
    finally:
        bed.stop()


def _client(bed: TestBed, which: str) -> AriClient:
    instance = bed.pbx if which == "pbx" else bed.carrier
    creds = instance.credentials
    return AriClient(instance.ari_url, creds.ari_user, creds.ari_password, request_timeout_ms=5000)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pbx_ari(testbed: TestBed) -> AsyncIterator[AriClient]:
    async with _client(testbed, "pbx") as client:
        yield client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def carrier_ari(testbed: TestBed) -> AsyncIterator[AriClient]:
    async with _client(testbed, "carrier") as client:
        yield client


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def carrier(carrier_ari: AriClient) -> AsyncIterator[Carrier]:
    sim = Carrier(carrier_ari)
    await sim.start()
    yield sim
    await sim.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def leak_audit(pbx_ari: AriClient, carrier_ari: AriClient) -> AsyncIterator[None]:
    """After the test: every channel and bridge on both instances must be gone (cleaned up if not)."""
    yield
    left = await audit(pbx_ari, carrier_ari)
    if left:
        for client in (carrier_ari, pbx_ari):  # leave a clean bed for the next test, then fail this one
            for channel in await client.channels():
                await client.delete_quietly(ari.hangup(channel["id"]))
            for bridge in await client.bridges():
                await client.delete_quietly(ari.destroy_bridge(bridge["id"]))
        pytest.fail("leak audit: left on the test bed:\n  " + "\n  ".join(left))

