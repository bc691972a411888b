"""Calls: the CallManager that routes events to sessions, and the Session that owns one call."""
