"""The outbox sender against a real local receiver (aiohttp on 127.0.0.1) on SQLite and PostgreSQL: every
message delivered at least once whatever the receiver or the sender does, signed, under a stable idempotency
key. Timers are tens of milliseconds; waits are on conditions, with timeouts."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from blockbuster import blockbuster_ctx
from sqlalchemy import select

from asterisk_agent.outbox import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    OutboxCounts,
    OutboxSender,
    OutboxSettings,
    WebhookSettings,
    counts,
    sign,
    verify_signature,
)
from asterisk_agent.outbox.queue import claim_due
from asterisk_agent.store import Store
from asterisk_agent.store.models import OutboxRecord
from tests.store.conftest import eventually
from tests.store.receiver import Receiver, status

SECRET = "s3cret-shared-with-the-crm-0001"
FAST = OutboxSettings(batch=8, poll_ms=50, lease_ms=600, timeout_ms=250, backoff_base_ms=20, backoff_max_ms=100,
                      retry_after_max_ms=5000)
SenderFactory = Callable[..., OutboxSender]


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver(SECRET)
    yield made
    await made.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def make_sender(store: Store, receiver: Receiver) -> AsyncIterator[SenderFactory]:
    senders: list[OutboxSender] = []

    def factory(settings: OutboxSettings = FAST, **options: Any) -> OutboxSender:
        targets = options.pop("targets", {"acme": WebhookSettings(url=receiver.url, secret=SECRET)})
        sender = OutboxSender(store, targets, settings, rng=random.Random(7), **options)
        senders.append(sender)
        return sender

    yield factory
    for sender in senders:
        await sender.stop()


async def calls(store: Store, count: int, account: str = "acme", prefix: str = "c") -> None:
    """``count`` calls, each started and finished: two messages each."""
    for index in range(count):
        await store.start_session(session_id=f"{prefix}{index}", account=account, did="100",
                                  caller_number=f"+1555000{index:04d}")
        await store.finish_session(f"{prefix}{index}", outcome="done", end_reason="completed")


async def rows(store: Store) -> list[OutboxRecord]:
    async with store.transaction() as tx:
        return list((await tx.db.scalars(select(OutboxRecord).order_by(OutboxRecord.id))).all())


async def all_delivered(store: Store) -> bool:
    return (await counts(store.engine)).pending == 0


def test_signatures_verify_and_refuse_tampering() -> None:
    body = b'{"id":"k1","type":"call.started"}'
    signature = sign(SECRET, 1_700_000_000, body)
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    assert verify_signature(SECRET, "1700000000", body, signature, now=1_700_000_100)
    assert verify_signature(SECRET.encode(), 1_700_000_000, body.decode(), signature, now=1_700_000_100)
    assert not verify_signature(SECRET, "1700000000", body + b" ", signature, now=1_700_000_100)
    assert not verify_signature("another-secret-entirely", "1700000000", body, signature, now=1_700_000_100)
    assert not verify_signature(SECRET, "1700000001", body, signature, now=1_700_000_100)
    assert not verify_signature(SECRET, "1700000000", body, signature, now=1_700_000_000 + 301)  # too old: replay
    assert verify_signature(SECRET, "1700000000", body, signature, tolerance_s=None, now=1_800_000_000)
    assert not verify_signature(SECRET, "17e8", body, signature)


def test_webhook_settings_keep_the_secret_out_of_reprs_and_errors() -> None:
    hook = WebhookSettings(url="https://crm.example/hooks?token=abc", secret=SECRET)
    assert SECRET not in repr(hook) and "token" not in repr(hook)
    assert hook.where == "https://crm.example"
    with pytest.raises(ValueError) as caught:
        WebhookSettings(url="https://crm.example/hooks", secret="short-secret")
    assert "short-secret" not in str(caught.value)
    for url in ("ftp://crm.example/x", "https://user:pw@crm.example/x", "crm.example"):
        with pytest.raises(ValueError):
            WebhookSettings(url=url, secret=SECRET)
    with pytest.raises(ValueError, match="lease_ms"):
        OutboxSettings(lease_ms=100, timeout_ms=100)


async def test_receiver_down_then_up_gets_every_message(store: Store, receiver: Receiver,
                                                        make_sender: SenderFactory) -> None:
    await calls(store, 6)  # 12 messages, the receiver not listening yet: connections are refused
    sender = make_sender()
    await sender.start()
    await sender.start()  # idempotent

    async def every_message_tried_twice() -> bool:
        return all(row.attempts >= 2 for row in await rows(store))
    await eventually(every_message_tried_twice, what="two refused attempts per message")
    assert all(row.last_error == "ClientConnectorError" and row.delivered_at is None for row in await rows(store))

    await receiver.start()
    await eventually(lambda: all_delivered(store), what="every message delivered")
    keys = {row.key for row in await rows(store)}
    assert set(receiver.delivered) == keys and len(keys) == 12
    assert all(arrival.signed for arrival in receiver.arrivals)
    kinds = sorted((message["session_id"], message["type"]) for message in receiver.delivered.values())
    assert kinds == sorted((f"c{i}", kind) for i in range(6) for kind in ("call.started", "call.ended"))
    assert all(row.last_status == 200 and row.attempts >= 3 for row in await rows(store))
    assert sender.stats.failed >= 12 and sender.stats.delivered == 12


async def test_new_messages_wake_the_sender(store: Store, receiver: Receiver, make_sender: SenderFactory) -> None:
    await receiver.start()
    sender = make_sender(OutboxSettings(poll_ms=60_000, lease_ms=2000, timeout_ms=1000))  # polls once a minute
    await sender.start()
    await calls(store, 1)
    await receiver.wait_for(lambda: len(receiver.delivered) == 2, timeout=5)


async def test_a_crashed_sender_is_taken_over_after_its_lease(store: Store, receiver: Receiver,
                                                              make_sender: SenderFactory) -> None:
    hold = 4
    receiver.script = [receiver.hang()] * hold  # the first attempts hang until the first sender is gone
    await receiver.start()
    await calls(store, 8)  # 16 messages
    settings = FAST.model_copy(update={"batch": hold, "timeout_ms": 1000, "lease_ms": 1200})
    first = make_sender(settings, owner="first")
    await first.start()
    await receiver.wait_for(lambda: len(receiver.arrivals) == hold)
    held = [arrival.key for arrival in receiver.arrivals]
    assert first.task is not None
    first.task.cancel()  # the worker dies mid-send: its leases stay
    with pytest.raises(asyncio.CancelledError):
        await first.task
    await first.stop(release=False)
    receiver.release.set()

    second = make_sender(FAST.model_copy(update={"lease_ms": 600}), owner="second")
    await second.start()
    await eventually(lambda: all_delivered(store), what="every message delivered by the second sender")
    keys = {row.key for row in await rows(store)}
    assert set(receiver.delivered) == keys and len(keys) == 16
    for key in held:  # not re-sent until the first sender's lease had passed
        first_try, *again = receiver.arrivals_of(key)
        assert again and again[0].at - first_try.at >= settings.lease_ms / 1000 - 0.1
    assert {row.attempts for row in await rows(store) if row.key in held} == {2}
    assert all(arrival.signed for arrival in receiver.arrivals)


async def test_two_senders_never_hold_the_same_message(store: Store, receiver: Receiver,
                                                       make_sender: SenderFactory) -> None:
    await receiver.start()
    await calls(store, 20)
    senders = [make_sender(FAST.model_copy(update={"batch": 3}), owner=name) for name in ("one", "two")]
    for sender in senders:
        await sender.start()
    await eventually(lambda: all_delivered(store), what="every message delivered")
    assert len(receiver.delivered) == 40 and len(receiver.arrivals) == 40 and receiver.duplicates == 0
    assert sum(sender.stats.delivered for sender in senders) == 40


async def test_claims_respect_the_limit_and_never_overlap(store: Store) -> None:
    await calls(store, 15)  # 30 messages
    claims = await asyncio.gather(*(claim_due(store.engine, f"owner-{n}", ["acme"], limit=4, lease_ms=60_000)
                                    for n in range(6)))
    assert all(len(claim) <= 4 for claim in claims)
    ids = [message.id for claim in claims for message in claim]
    assert len(ids) == len(set(ids)) == 24
    leftover = await claim_due(store.engine, "late", ["acme"], limit=100, lease_ms=60_000)
    assert len(leftover) == 6 and not {message.id for message in leftover} & set(ids)
    assert await claim_due(store.engine, "later", ["acme"], limit=100, lease_ms=60_000) == []


async def test_retry_after_is_honoured(store: Store, receiver: Receiver, make_sender: SenderFactory) -> None:
    receiver.script = [status(429, {"Retry-After": "1"}), status(500)]
    await receiver.start()
    await calls(store, 1)
    async with store.transaction() as tx:  # only the call.started message
        for row in await tx.db.scalars(select(OutboxRecord).where(OutboxRecord.kind == "call.ended")):
            await tx.db.delete(row)
    sender = make_sender()
    await sender.start()
    await eventually(lambda: all_delivered(store), what="delivery after the Retry-After")
    limited, failed, accepted = receiver.arrivals
    assert failed.at - limited.at >= 0.99  # backoff alone would have retried within 20 ms
    assert accepted.at - failed.at < 0.9
    assert limited.key == failed.key == accepted.key and limited.body == failed.body == accepted.body
    [row] = await rows(store)
    assert (row.attempts, row.last_status, row.last_error) == (3, 200, "HTTP 500")


async def test_a_receiver_that_hangs_past_the_timeout_is_retried(store: Store, receiver: Receiver,
                                                                 make_sender: SenderFactory) -> None:
    receiver.script = [receiver.hang()]
    await receiver.start()
    await store.start_session(session_id="c1", account="acme", did="100")
    sender = make_sender()
    await sender.start()
    await eventually(lambda: all_delivered(store), what="delivery after a timed-out attempt")
    hung, accepted = receiver.arrivals
    assert accepted.at - hung.at >= FAST.timeout_ms / 1000
    assert hung.key == accepted.key
    [row] = await rows(store)
    assert (row.attempts, row.last_error) == (2, "timeout")


async def test_messages_of_an_account_without_a_webhook_wait(store: Store, receiver: Receiver,
                                                             make_sender: SenderFactory) -> None:
    await receiver.start()
    await calls(store, 1, account="acme")
    await calls(store, 1, account="bolt", prefix="b")  # bolt has no webhook configured
    sender = make_sender()
    await sender.start()
    await receiver.wait_for(lambda: len(receiver.delivered) == 2)
    await sender.stop()  # a clean stop lets the attempts in flight record their answer
    assert await counts(store.engine, "acme") == OutboxCounts(pending=0, delivered=2)
    assert await counts(store.engine, "bolt") == OutboxCounts(pending=2, delivered=0)  # kept, not dropped
    later = make_sender(targets={"bolt": WebhookSettings(url=receiver.url, secret=SECRET)})
    await later.start()
    await eventually(lambda: all_delivered(store), what="bolt's messages once bolt has a webhook")
    assert len(receiver.delivered) == 4


async def test_headers_and_logs(store: Store, receiver: Receiver, make_sender: SenderFactory,
                                caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, str]] = []

    async def capture(request: Any) -> Any:
        seen.append(dict(request.headers))
        return await status(503)(request)
    receiver.script = [capture]
    await receiver.start()
    await store.start_session(session_id="c1", account="acme", did="100", caller_number="+15559876543")
    caplog.set_level("DEBUG", logger="asterisk_agent")
    sender = make_sender()
    # asyncpg looks for a password file with a blocking stat() when it opens a connection: open the pooled
    # ones (the sender's and this test's) before watching, so what is watched is the sender's own work.
    async with store.engine.connect(), store.engine.connect(), store.engine.connect():
        pass
    with blockbuster_ctx(["asterisk_agent.outbox"]):  # nothing the sender does blocks the loop
        await sender.start()
        await eventually(lambda: all_delivered(store), what="delivery")
        await sender.stop()
    [headers] = seen
    [row] = await rows(store)
    assert headers[IDEMPOTENCY_HEADER] == row.key == json.loads(row.body)["id"]
    assert headers["Content-Type"] == "application/json"
    assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], row.body, headers[SIGNATURE_HEADER])
    text = caplog.text
    assert "acme" in text and row.key in text
    for secret_or_private in (SECRET, "t0k3n", "/hooks/calls", "+15559876543", headers[SIGNATURE_HEADER]):
        assert secret_or_private not in text
