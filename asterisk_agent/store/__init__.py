"""The store: every call's record (turns, events, outcome, recordings), callbacks, and the webhook outbox, in
SQLite by default or PostgreSQL by URL, with Alembic migrations applied when it opens."""

from asterisk_agent.store.engine import StoreError, head_revision, parse_store_url
from asterisk_agent.store.records import (
    AccountRecords,
    AdminRecords,
    CallbackView,
    CallDetail,
    CallSummary,
    EventView,
    OutcomeView,
    RecordingView,
    TurnView,
)
from asterisk_agent.store.retention import FileDeletion, PurgeResult, delete_recording_files
from asterisk_agent.store.store import Store, StoreTransaction, UnknownSession
from asterisk_agent.store.types import utcnow

__all__ = [
    "AccountRecords",
    "AdminRecords",
    "CallDetail",
    "CallSummary",
    "CallbackView",
    "EventView",
    "FileDeletion",
    "OutcomeView",
    "PurgeResult",
    "RecordingView",
    "Store",
    "StoreError",
    "StoreTransaction",
    "TurnView",
    "UnknownSession",
    "delete_recording_files",
    "head_revision",
    "parse_store_url",
    "utcnow",
]
