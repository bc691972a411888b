"""The leak audit: no channel and no bridge left on the test bed's instances (every one there is ours)."""

from __future__ import annotations

import asyncio
import os

from asterisk_agent.ari.client import AriClient

LEAK_WAIT_S = float(os.environ.get("ASTERISK_AGENT_LEAK_WAIT_S", "5"))


async def leftovers(*clients: AriClient) -> list[str]:
    found: list[str] = []
    for client in clients:
        name = client.username
        found += [f"{name}: channel {c['id']} ({c.get('name')})" for c in await client.channels()]
        found += [f"{name}: bridge {b['id']}" for b in await client.bridges()]
    return found


async def audit(pbx: AriClient, carrier: AriClient, wait_s: float = LEAK_WAIT_S) -> list[str]:
    """Wait up to ``wait_s`` for both instances to hold no channel and no bridge; return what is left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        left = await leftovers(pbx, carrier)
        if not left or loop.time() > deadline:
            return left
        await asyncio.sleep(0.05)
