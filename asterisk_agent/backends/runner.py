"""Run the three reference backends together: in process for tests and the demo, or in the foreground.

    async with ReferenceBackends(today=date(2025, 3, 12)) as backends:   # free ports
        backends.urls["clinic"]                     # "http://127.0.0.1:PORT"
        backends.clinic.faults.apply({"mode": "503"})
        await backends.stop_listening("bank")      # the bank is gone: connections refused

    python -m asterisk_agent.backends --port-base 18080   # clinic 18081, bank 18082, insurance 18083
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Mapping
from datetime import date
from types import TracebackType

from asterisk_agent.backends.app import ReferenceService, ServiceServer, parse_iso_date
from asterisk_agent.backends.bank import BankService
from asterisk_agent.backends.clinic import ClinicService
from asterisk_agent.backends.faults import FaultState
from asterisk_agent.backends.insurance import InsuranceService

SERVICE_NAMES = ("clinic", "bank", "insurance")
DEFAULT_PORT_BASE = 18080  # clinic on base + 1, bank + 2, insurance + 3


class ReferenceBackends:
    """The clinic, bank and insurance backends, each on its own port (0 or missing in ``ports``: a free one).

    The services are plain objects in this process: tests change their faults and read their state and
    counters directly, or through each one's ``/_control/*`` routes.
    """

    def __init__(self, host: str = "127.0.0.1", ports: Mapping[str, int] | None = None, today: date | None = None,
                 faults: Mapping[str, FaultState] | None = None) -> None:
        unknown = set(ports or {}) | set(faults or {})
        unknown -= set(SERVICE_NAMES)
        if unknown:
            raise ValueError(f"unknown backends: {', '.join(sorted(unknown))}; known: {', '.join(SERVICE_NAMES)}")
        faults = faults or {}
        self.clinic = ClinicService(today=today, faults=faults.get("clinic"))
        self.bank = BankService(today=today, faults=faults.get("bank"))
        self.insurance = InsuranceService(today=today, faults=faults.get("insurance"))
        services: tuple[ReferenceService, ...] = (self.clinic, self.bank, self.insurance)
        self.servers = {s.name: ServiceServer(s, host, (ports or {}).get(s.name, 0)) for s in services}

    @property
    def services(self) -> dict[str, ReferenceService]:
        return {name: server.service for name, server in self.servers.items()}

    @property
    def urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self.servers.items()}

    async def start(self) -> None:
        started: list[ServiceServer] = []
        try:
            for server in self.servers.values():
                await server.start()
                started.append(server)
        except BaseException:
            for server in started:
                await server.close()
            raise

    async def close(self) -> None:
        for server in self.servers.values():
            await server.close()

    async def stop_listening(self, name: str) -> None:
        """Make one backend vanish: new connections are refused, open ones dropped. Its state is kept."""
        await self.servers[name].stop_listening()

    async def start_listening(self, name: str) -> None:
        """Bring a backend back on the same port."""
        await self.servers[name].start_listening()

    def clear_faults(self) -> None:
        for service in self.services.values():
            service.faults.clear()

    async def __aenter__(self) -> ReferenceBackends:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()


async def serve(host: str, port_base: int, today: date | None) -> int:
    ports = {name: port_base + offset for offset, name in enumerate(SERVICE_NAMES, start=1)}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with ReferenceBackends(host, ports, today) as backends:
            for name, url in backends.urls.items():
                print(f"{name}: {url}", flush=True)
            await stop.wait()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asterisk_agent.backends",
        description="Run the reference clinic, bank and insurance backends until interrupted.")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE,
                        help=f"clinic on BASE+1, bank BASE+2, insurance BASE+3 (default {DEFAULT_PORT_BASE})")
    parser.add_argument("--today", default="", help="YYYY-MM-DD: fix the services' calendar (default: real date)")
    args = parser.parse_args(argv)
    today = parse_iso_date(args.today) if args.today else None
    if args.today and today is None:
        parser.error("--today takes YYYY-MM-DD")
    if not 0 < args.port_base <= 65535 - len(SERVICE_NAMES):
        parser.error("--port-base must leave room for three ports below 65536")
    return asyncio.run(serve(args.host, args.port_base, today))
