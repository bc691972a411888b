"""Bad input from Asterisk's side: malformed and unknown events, ARI errors and stalls, wrong credentials."""

from __future__ import annotations

import pytest

from asterisk_agent.ari.errors import AriAuthError
from asterisk_agent.calls.session import EndReason
from asterisk_agent.pbx.carrier.callers import Carrier
from asterisk_agent.pbx.instances import TestBed
from asterisk_agent.worker import Worker
from tests.conftest import worker_settings
from tests.support.ariproxy import AriProxy

pytestmark = [pytest.mark.asterisk, pytest.mark.usefixtures("leak_audit")]


async def test_malformed_and_unknown_events_are_logged_and_ignored(
    make_worker, carrier: Carrier, proxy: AriProxy, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await make_worker(ari={"url": proxy.url})
    await proxy.inject("{not json")
    await proxy.inject('["a", "list"]')
    await proxy.inject('{"type": "StasisStart", "application": "asterisk-agent"}')
    await proxy.inject('{"type": "ChannelDtmfReceived", "application": "asterisk-agent", "digit": "x",'
                       ' "channel": {"id": "c1", "name": "n", "state": "Up"}}')
    await proxy.inject('{"type": "SomethingNewInAsterisk42", "application": "asterisk-agent"}')
    # The stream carries on: a real call still gets its own session and its digits back.
    caller = await carrier.call("100")
    await caller.wait_answered()
    await caller.send_digits("58#")
    assert await caller.wait_digits(2) == "58"
    await caller.hangup()
    await worker.manager.wait_idle()
    assert worker.stream.bad_messages == 4
    assert worker.stream.connections == 1
    dropped = [r.getMessage() for r in caplog.records if "dropped a malformed event" in r.getMessage()]
    assert len(dropped) == 4
    assert any("not JSON" in m for m in dropped) and any("without channel" in m for m in dropped)
    assert [s.readbacks for s in worker.manager.finished] == [["58"]]


async def test_ari_answering_500_ends_the_session_and_frees_the_caller(
    make_worker, carrier: Carrier, proxy: AriProxy
) -> None:
    worker = await make_worker(ari={"url": proxy.url})
    fault = proxy.fail("POST", r"/channels/[^/]+/answer", "500")
    caller = await carrier.call("100")
    cause = await caller.wait_gone()  # hung up by the session's teardown: no dead air
    await worker.manager.wait_idle()
    assert fault.hits == 1
    assert cause == 34  # congestion (SIP 503): the network may try elsewhere
    (session,) = worker.manager.finished
    assert session.end_reason is EndReason.ERROR
    errors = [e.detail for e in session.history if e.what == "error"]
    assert errors and "500" in errors[0] and "injected" in errors[0]
    assert session.ledger.live() == []


async def test_ari_that_hangs_times_out_and_the_caller_is_not_left_waiting(
    make_worker, carrier: Carrier, proxy: AriProxy
) -> None:
    worker = await make_worker(ari={"url": proxy.url, "request_timeout_ms": 300})
    fault = proxy.fail("POST", r"/channels/[^/]+/answer", "hang")
    caller = await carrier.call("100")
    await caller.wait_gone()
    await worker.manager.wait_idle()
    assert fault.hits == 1
    (session,) = worker.manager.finished
    assert session.end_reason is EndReason.ERROR
    assert any("no answer within the timeout" in e.detail for e in session.history if e.what == "error")


async def test_wrong_ari_password_is_a_clear_error(testbed: TestBed) -> None:
    settings = worker_settings(testbed, ari={"password": "not-the-password"})
    worker = Worker(settings)
    with pytest.raises(AriAuthError, match="401"):
        await worker.start()
    await worker.client.close()
