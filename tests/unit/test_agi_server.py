"""The FastAGI server over real TCP sockets on 127.0.0.1, against a scripted fake Asterisk written here: it sends
the environment the way res_agi does, reads our commands with res_agi's word rules and answers like Asterisk 22
(including ``HANGUP`` ahead of the reply it overtook). No sleeps: every wait is on an event or a read, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import pytest

from asterisk_agent.agi.errors import AgiCommandError, AgiHangup, AgiProtocolError
from asterisk_agent.agi.protocol import AgiEnvironment
from asterisk_agent.agi.server import AgiRequest, FastAgiServer, Handler
from tests.unit.test_agi_protocol import asterisk_words

WAIT_S = 5.0  # the bound on every wait: a failing test fails, it never hangs
CALLER = "+15551234"  # must never reach a log
CALLER_NAME = "Jane Doe"


class FakeAsterisk:
    """The Asterisk end of one FastAGI connection, driven step by step by a test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> FakeAsterisk:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @staticmethod
    def environment(script: str | None, *, args: Sequence[str] = (), uniqueid: str = "1700000000.1",
                    extension: str = "100") -> bytes:
        lines = ["agi_network: yes"]
        url = "agi://127.0.0.1:4573"
        if script is not None:
            lines.append(f"agi_network_script: {script}")
            url += "/" + script
        lines += [f"agi_request: {url}", "agi_channel: PJSIP/carrier-00000001", "agi_language: en",
                  "agi_type: PJSIP", f"agi_uniqueid: {uniqueid}", "agi_version: 22.10.1",
                  f"agi_callerid: {CALLER}", f"agi_calleridname: {CALLER_NAME}", "agi_callingpres: 0",
                  "agi_dnid: 100", "agi_rdnis: unknown", "agi_context: from-trunk", f"agi_extension: {extension}",
                  "agi_priority: 2", "agi_enhanced: 0.0", "agi_accountcode: ", "agi_threadid: 1401"]
        lines += [f"agi_arg_{n}: {arg}" for n, arg in enumerate(args, start=1)]
        return ("\n".join(lines) + "\n\n").encode()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_environment(self, script: str | None, *, args: Sequence[str] = (),
                               uniqueid: str = "1700000000.1", extension: str = "100") -> None:
        await self.send(self.environment(script, args=args, uniqueid=uniqueid, extension=extension))

    async def next_command(self) -> list[str]:
        async with asyncio.timeout(WAIT_S):
            line = await self.reader.readline()
        assert line.endswith(b"\n"), f"connection closed instead of a command: {line!r}"
        return asterisk_words(line.decode())

    async def reply(self, *lines: str) -> None:
        await self.send("".join(line + "\n" for line in lines).encode())

    async def read_rest(self) -> bytes:
        """Everything the server still sends, until it closes the connection."""
        data = b""
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    chunk = await self.reader.read(4096)
                except ConnectionResetError:
                    return data
                if not chunk:
                    return data
                data += chunk

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def serve(routes: dict[str, Handler], *, header_timeout_ms: int = 2000, command_timeout_ms: int = 2000,
          max_connections: int = 256, max_header_bytes: int = 32 * 1024) -> FastAgiServer:
    """A server on a free port of 127.0.0.1, its timers short."""
    return FastAgiServer(routes, port=0, header_timeout_ms=header_timeout_ms, command_timeout_ms=command_timeout_ms,
                         max_connections=max_connections, max_header_bytes=max_header_bytes)


async def ask(server: FastAgiServer, script: str | None, *, args: Sequence[str] = (),
              uniqueid: str = "1700000000.1", extension: str = "100") -> FakeAsterisk:
    asterisk = await FakeAsterisk.connect(server.port)
    await asterisk.send_environment(script, args=args, uniqueid=uniqueid, extension=extension)
    return asterisk


def no_caller_data(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text + "".join(str(record.args) for record in caplog.records)
    assert CALLER not in text and CALLER.lstrip("+") not in text and CALLER_NAME not in text


async def test_a_route_sets_two_variables_and_the_dialplan_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asterisk_agent.agi")

    async def admit(request: AgiRequest) -> None:
        await request.set_variable("AGENT_SLOT", "slot-" + request.env.params["did"])
        await request.set_variable("AGENT_NOTE", 'says "hi" \\ (twice)')

    async with serve({"admit": admit}) as server:
        asterisk = await ask(server, "admit?did=100")
        assert await asterisk.next_command() == ["SET", "VARIABLE", "AGENT_SLOT", "slot-100"]
        await asterisk.reply("200 result=1")
        assert await asterisk.next_command() == ["SET", "VARIABLE", "AGENT_NOTE", 'says "hi" \\ (twice)']
        await asterisk.reply("200 result=1")
        assert await asterisk.read_rest() == b""  # closed without FAILURE: AGISTATUS=SUCCESS
        await asterisk.close()
        counters = server.counters
        assert (counters.requests, counters.by_route, counters.protocol_errors, counters.handler_errors) == (
            1, {"admit": 1}, 0, 0)
    no_caller_data(caplog)


async def test_query_parameters_and_arguments_reach_the_handler() -> None:
    seen: asyncio.Future[AgiEnvironment] = asyncio.get_running_loop().create_future()

    async def admit(request: AgiRequest) -> None:
        seen.set_result(request.env)

    async with serve({"admit": admit}) as server:
        asterisk = await ask(server, "admit?did=%2B4930123&x=1&tag=a+b", args=["first arg", "second"])
        assert await asterisk.read_rest() == b""
        await asterisk.close()
    env = await asyncio.wait_for(seen, WAIT_S)
    assert env.script == "admit"
    assert dict(env.params) == {"did": "+4930123", "x": "1", "tag": "a+b"}
    assert env.args == ("first arg", "second")
    assert env.request == "agi://127.0.0.1:4573/admit?did=%2B4930123&x=1&tag=a+b"
    assert (env.callerid, env.uniqueid, env.context, env.extension, env.priority) == (
        CALLER, "1700000000.1", "from-trunk", "100", 2)


async def test_an_unknown_route_is_answered_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asterisk_agent.agi")

    async def admit(request: AgiRequest) -> None:
        raise AssertionError("not this route")

    async with serve({"admit": admit}) as server:
        asterisk = await ask(server, "nope?did=100", uniqueid="1700000000.42")
        assert await asterisk.read_rest() == b"FAILURE\n"  # the dialplan sees AGISTATUS=FAILURE
        await asterisk.close()
        assert (server.counters.unknown_routes, server.counters.requests, server.counters.by_route) == (1, 1, {})
    assert "no route 'nope' (uniqueid 1700000000.42)" in caplog.text
    no_caller_data(caplog)


async def test_a_url_without_a_script_is_refused() -> None:
    async with serve({"admit": lambda request: asyncio.sleep(0)}) as server:
        asterisk = await ask(server, None)  # AGI(agi://host:port): Asterisk sends no agi_network_script
        assert await asterisk.read_rest() == b"FAILURE\n"
        await asterisk.close()
        assert (server.counters.protocol_errors, server.counters.requests) == (1, 0)


async def test_an_environment_fed_byte_by_byte_is_read_whole() -> None:
    seen: asyncio.Future[AgiEnvironment] = asyncio.get_running_loop().create_future()

    async def admit(request: AgiRequest) -> None:
        seen.set_result(request.env)

    async with serve({"admit": admit}) as server:
        asterisk = await FakeAsterisk.connect(server.port)
        for byte in FakeAsterisk.environment("admit?did=7", args=["a"]):
            await asterisk.send(bytes([byte]))
        assert await asterisk.read_rest() == b""
        await asterisk.close()
    env = await asyncio.wait_for(seen, WAIT_S)
    assert (env.script, dict(env.params), env.args) == ("admit", {"did": "7"}, ("a",))


async def test_a_connection_closed_mid_header_ends_at_once(caplog: pytest.LogCaptureFixture) -> None:
    async with serve({"admit": lambda request: asyncio.sleep(0)}, header_timeout_ms=60_000) as server:
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.send(b"agi_network: yes\nagi_network_script: admit\nagi_chan")
        asterisk.writer.write_eof()
        started = time.monotonic()
        await asterisk.read_rest()
        assert time.monotonic() - started < 1.0  # neither the header timeout nor a spin
        await asterisk.close()
        assert (server.counters.protocol_errors, server.counters.header_timeouts, server.counters.active) == (1, 0, 0)
    assert "connection closed after 2 environment lines, before the blank line" in caplog.text


async def test_a_slow_header_times_out() -> None:
    async with serve({"admit": lambda request: asyncio.sleep(0)}, header_timeout_ms=100) as server:
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.send(b"agi_network: yes\n")  # and nothing more
        assert await asterisk.read_rest() == b"FAILURE\n"
        await asterisk.close()
        assert (server.counters.protocol_errors, server.counters.header_timeouts) == (1, 1)


async def test_a_garbage_header_is_refused_on_its_first_line() -> None:
    async with serve({"admit": lambda request: asyncio.sleep(0)}, header_timeout_ms=60_000) as server:
        asterisk = await FakeAsterisk.connect(server.port)
        await asterisk.send(b"GET / HTTP/1.1\r\nHost: example\r\n")  # no blank line needed to refuse it
        assert await asterisk.read_rest() == b"FAILURE\n"
        await asterisk.close()
        assert (server.counters.protocol_errors, server.counters.requests) == (1, 0)


@pytest.mark.parametrize(
    "flood",
    [b"agi_network: yes\n" + b"".join(b"agi_x%d: %s\n" % (n, b"9" * 20) for n in range(100)),
     b"agi_network: yes\nagi_x: " + b"9" * 100_000 + b"\n"],
    ids=["many lines", "one endless line"],
)
async def test_a_header_over_the_size_limit_is_refused(flood: bytes) -> None:
    async with serve({"admit": lambda request: asyncio.sleep(0)}, max_header_bytes=1024) as server:
        asterisk = await FakeAsterisk.connect(server.port)
        asterisk.writer.write(flood)
        await asterisk.read_rest()
        await asterisk.close()
        assert (server.counters.protocol_errors, server.counters.header_timeouts, server.counters.requests) == (
            1, 0, 0)


async def test_hangup_during_a_command_raises_and_the_next_reply_stays_in_step() -> None:
    outcome: asyncio.Future[tuple[str, bool, str | None]] = asyncio.get_running_loop().create_future()

    async def hold(request: AgiRequest) -> None:
        try:
            await request.set_variable("STEP", "1")
            outcome.set_result(("no hangup", request.hung_up, None))
        except AgiHangup as exc:
            # a dead channel still takes GET VARIABLE: its answer, not the overtaken SET's, must come back
            outcome.set_result((str(exc), request.hung_up, await request.get_variable("STEP")))

    async with serve({"hold": hold}) as server:
        asterisk = await ask(server, "hold")
        assert await asterisk.next_command() == ["SET", "VARIABLE", "STEP", "1"]
        await asterisk.reply("HANGUP", "200 result=1")  # Asterisk 22: the hangup line, then the SET's own reply
        assert await asterisk.next_command() == ["GET", "VARIABLE", "STEP"]
        await asterisk.reply("200 result=1 (after hangup)")
        assert await asterisk.read_rest() == b""  # nobody reads AGISTATUS on a gone channel: no FAILURE
        await asterisk.close()
        assert (server.counters.hangups, server.counters.handler_errors) == (1, 0)
    assert await asyncio.wait_for(outcome, WAIT_S) == ("AGI SET VARIABLE: the channel hung up", True, "after hangup")


async def test_an_uncaught_hangup_ends_the_request_quietly() -> None:
    async def hold(request: AgiRequest) -> None:
        await request.command("WAIT FOR DIGIT", "3000")

    async with serve({"hold": hold}) as server:
        asterisk = await ask(server, "hold")
        assert await asterisk.next_command() == ["WAIT", "FOR", "DIGIT", "3000"]
        await asterisk.reply("HANGUP")
        assert await asterisk.read_rest() == b""
        await asterisk.close()
        assert (server.counters.hangups, server.counters.handler_errors, server.counters.protocol_errors) == (1, 0, 0)


async def test_a_dead_channel_answer_raises_hangup() -> None:
    errors: list[AgiHangup] = []

    async def release(request: AgiRequest) -> None:
        await request.set_variable("RELEASED", request.env.params["token"])  # allowed on a dead channel
        try:
            await request.command("STREAM FILE", "beep", "")
        except AgiHangup as exc:
            errors.append(exc)

    async with serve({"release": release}) as server:
        asterisk = await ask(server, "release?token=abc", extension="h")
        assert await asterisk.next_command() == ["SET", "VARIABLE", "RELEASED", "abc"]
        await asterisk.reply("200 result=1")
        assert await asterisk.next_command() == ["STREAM", "FILE", "beep", ""]
        await asterisk.reply("511 Command Not Permitted on a dead channel or intercept routine")
        assert await asterisk.read_rest() == b""
        await asterisk.close()
    assert [str(e) for e in errors] == [
        "AGI STREAM FILE: Command Not Permitted on a dead channel or intercept routine"]


async def test_asterisk_closing_the_connection_mid_command_is_a_hangup() -> None:
    errors: list[AgiHangup] = []

    async def hold(request: AgiRequest) -> None:
        try:
            await request.command("WAIT FOR DIGIT", "3000")
        except AgiHangup as exc:
            errors.append(exc)

    async with serve({"hold": hold}) as server:
        asterisk = await ask(server, "hold")
        await asterisk.next_command()
        await asterisk.send(b"200 resu")  # cut off in the middle of the reply
        asterisk.writer.write_eof()
        await asterisk.read_rest()
        await asterisk.close()
    assert [str(e) for e in errors] == ["Asterisk closed the AGI connection"]


async def test_usage_and_unknown_command_replies_keep_the_stream_in_step() -> None:
    seen: list[object] = []

    async def admit(request: AgiRequest) -> None:
        usage = await request.command("SET VARIABLE", "X")
        seen.append((usage.code, usage.invalid, usage.usage))
        try:
            await request.set_variable("Y", "1")
        except AgiCommandError as exc:
            seen.append(str(exc))
        seen.append(await request.get_variable("Z"))

    async with serve({"admit": admit}) as server:
        asterisk = await ask(server, "admit")
        assert await asterisk.next_command() == ["SET", "VARIABLE", "X"]
        await asterisk.reply("520-Invalid command syntax.  Proper usage follows:",
                             "Sets a variable to the current channel.", "520 End of proper usage.")
        await asterisk.next_command()
        await asterisk.reply("510 Invalid or unknown command")
        assert await asterisk.next_command() == ["GET", "VARIABLE", "Z"]
        await asterisk.reply("200 result=0")
        assert await asterisk.read_rest() == b""
        await asterisk.close()
    assert seen == [(520, True, "Sets a variable to the current channel."),
                    "AGI SET VARIABLE: 510 Invalid or unknown command", None]


async def test_a_malformed_reply_fails_the_request() -> None:
    async def admit(request: AgiRequest) -> None:
        await request.set_variable("A", "1")

    async with serve({"admit": admit}) as server:
        asterisk = await ask(server, "admit")
        await asterisk.next_command()
        await asterisk.reply("hello there")
        assert await asterisk.read_rest() == b"FAILURE\n"
        await asterisk.close()
        assert (server.counters.protocol_errors, server.counters.handler_errors) == (1, 0)


async def test_a_command_timeout_leaves_the_connection_refusing_further_commands() -> None:
    errors: list[BaseException] = []

    async def admit(request: AgiRequest) -> None:
        for _ in range(2):
            try:
                await request.set_variable("A", "1")
            except (TimeoutError, AgiProtocolError) as exc:
                errors.append(exc)

    async with serve({"admit": admit}, command_timeout_ms=100) as server:
        asterisk = await ask(server, "admit")
        assert await asterisk.next_command() == ["SET", "VARIABLE", "A", "1"]  # and never answered
        assert await asterisk.read_rest() == b""  # the second command was never sent
        await asterisk.close()
    assert [type(e) for e in errors] == [TimeoutError, AgiProtocolError]
    assert str(errors[0]) == "AGI SET VARIABLE got no reply within 100 ms"
    assert str(errors[1]).startswith("AGI SET VARIABLE not sent: the connection is out of step")


async def test_a_handler_that_raises_is_logged_by_route_and_answered_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asterisk_agent.agi")

    async def admit(request: AgiRequest) -> None:
        raise RuntimeError("the store is down")

    async with serve({"admit": admit}) as server:
        asterisk = await ask(server, "admit?did=100", uniqueid="1700000000.7")
        assert await asterisk.read_rest() == b"FAILURE\n"
        await asterisk.close()
        assert (server.counters.handler_errors, server.counters.by_route) == (1, {"admit": 1})
    assert "route 'admit' (uniqueid 1700000000.7): handler failed" in caplog.text
    assert "RuntimeError: the store is down" in caplog.text
    no_caller_data(caplog)


async def test_close_cancels_a_handler_mid_command_and_answers_failure() -> None:
    cancelled = asyncio.Event()

    async def admit(request: AgiRequest) -> None:
        try:
            await request.command("WAIT FOR DIGIT", "60000")
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = serve({"admit": admit})
    await server.start()
    port = server.port
    asterisk = await ask(server, "admit")
    assert await asterisk.next_command() == ["WAIT", "FOR", "DIGIT", "60000"]  # the handler now waits on us
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(server.close(), server.close())  # concurrent and idempotent
    assert cancelled.is_set()
    assert await asterisk.read_rest() == b"FAILURE\n"
    await asterisk.close()
    await server.close()
    assert server.counters.active == 0
    with pytest.raises(RuntimeError):
        _ = server.port
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_many_concurrent_requests_each_get_their_own_answer() -> None:
    calls = 100

    async def admit(request: AgiRequest) -> None:
        did = request.env.params["did"]
        await request.set_variable("AGENT_SLOT", f"slot-{did}")
        await request.set_variable("AGENT_DID", await request.get_variable("EXTEN") or "")

    async def caller(server: FastAgiServer, n: int) -> None:
        asterisk = await ask(server, f"admit?did={n}", uniqueid=f"1700000000.{n}")
        assert await asterisk.next_command() == ["SET", "VARIABLE", "AGENT_SLOT", f"slot-{n}"]
        await asterisk.reply("200 result=1")
        assert await asterisk.next_command() == ["GET", "VARIABLE", "EXTEN"]
        await asterisk.reply(f"200 result=1 ({n})")
        assert await asterisk.next_command() == ["SET", "VARIABLE", "AGENT_DID", str(n)]
        await asterisk.reply("200 result=1")
        assert await asterisk.read_rest() == b""
        await asterisk.close()

    async with serve({"admit": admit}) as server:
        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(*(caller(server, n) for n in range(calls)))
        counters = server.counters
        assert (counters.requests, counters.by_route, counters.active, counters.handler_errors) == (
            calls, {"admit": calls}, 0, 0)


async def test_connections_over_the_limit_are_answered_failure() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def admit(request: AgiRequest) -> None:
        entered.set()
        await release.wait()

    async with serve({"admit": admit}, max_connections=1) as server:
        first = await ask(server, "admit")
        async with asyncio.timeout(WAIT_S):
            await entered.wait()
        second = await ask(server, "admit")
        assert await second.read_rest() == b"FAILURE\n"
        await second.close()
        release.set()
        assert await first.read_rest() == b""
        await first.close()
        assert (server.counters.rejected, server.counters.by_route) == (1, {"admit": 1})


async def test_commands_from_one_handler_go_one_at_a_time() -> None:
    requests: list[AgiRequest] = []

    async def admit(request: AgiRequest) -> None:
        requests.append(request)
        await asyncio.gather(request.set_variable("A", "1"), request.set_variable("B", "2"))

    async with serve({"admit": admit}) as server:
        asterisk = await ask(server, "admit")
        first = await asterisk.next_command()
        assert requests[0].commands == 1  # the second waits for the first one's reply
        await asterisk.reply("200 result=1")
        second = await asterisk.next_command()
        await asterisk.reply("200 result=1")
        assert sorted([first, second]) == [["SET", "VARIABLE", "A", "1"], ["SET", "VARIABLE", "B", "2"]]
        assert await asterisk.read_rest() == b""
        await asterisk.close()


@pytest.mark.parametrize("route", ["", "/admit", "admit/", "admit?did=1"])
def test_route_names_are_checked(route: str) -> None:
    with pytest.raises(ValueError, match="must be a non-empty path"):
        FastAgiServer({route: lambda request: asyncio.sleep(0)})


def test_timers_and_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        FastAgiServer({}, header_timeout_ms=0)
