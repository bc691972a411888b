"""The FastAGI protocol, pure: environments, command lines and replies as Asterisk 22.10.1 sent and read them
(recorded from a real FastAGI exchange), and malformed input with the exact error each gets."""

from __future__ import annotations

import pytest

from asterisk_agent.agi.errors import AgiProtocolError
from asterisk_agent.agi.protocol import (
    HANGUP_CODE,
    MAX_COMMAND_LINE,
    MAX_COMMAND_WORDS,
    AgiReply,
    format_command,
    parse_environment,
    parse_environment_line,
    parse_network_script,
    parse_reply,
    reply_terminator,
)

# What Asterisk 22.10.1 sent for exten 100 running
# AGI(agi://127.0.0.1:45731/admit?did=${EXTEN}&x=1,first arg,second) with CALLERID(num)=+15551234.
REAL_ENVIRONMENT = (
    b"agi_network: yes\n"
    b"agi_network_script: admit?did=100&x=1\n"
    b"agi_request: agi://127.0.0.1:45731/admit?did=100&x=1\n"
    b"agi_channel: Local/100@agi-test-00000000;2\n"
    b"agi_language: en\n"
    b"agi_type: Local\n"
    b"agi_uniqueid: agi-1795854400.1\n"
    b"agi_version: 22.10.1+dfsg+~cs6.17.60671434-1\n"
    b"agi_callerid: +15551234\n"
    b"agi_calleridname: Jane Doe\n"
    b"agi_callingpres: 0\n"
    b"agi_callingani2: 0\n"
    b"agi_callington: 0\n"
    b"agi_callingtns: 0\n"
    b"agi_dnid: unknown\n"
    b"agi_rdnis: unknown\n"
    b"agi_context: agi-test\n"
    b"agi_extension: 100\n"
    b"agi_priority: 3\n"
    b"agi_enhanced: 0.0\n"
    b"agi_accountcode: \n"
    b"agi_threadid: 140207326172864\n"
    b"agi_arg_1: first arg\n"
    b"agi_arg_2: second\n"
    b"\n"
)

# The same Asterisk for AGI(agi://127.0.0.1:45731) (no path): it sends no agi_network_script line at all.
REAL_ENVIRONMENT_WITHOUT_SCRIPT = (
    b"agi_network: yes\n"
    b"agi_request: agi://127.0.0.1:45731\n"
    b"agi_channel: Local/300@agi-test-00000002;2\n"
    b"agi_uniqueid: agi-1795854400.5\n"
    b"agi_callerid: unknown\n"
    b"agi_context: agi-test\n"
    b"agi_extension: 300\n"
    b"agi_priority: 1\n"
    b"\n"
)


def test_a_real_environment_parses_into_typed_fields() -> None:
    env = parse_environment(REAL_ENVIRONMENT)
    assert env.script == "admit"
    assert dict(env.params) == {"did": "100", "x": "1"}
    assert env.args == ("first arg", "second")
    assert env.request == "agi://127.0.0.1:45731/admit?did=100&x=1"
    assert (env.channel, env.uniqueid, env.context, env.extension, env.priority) == (
        "Local/100@agi-test-00000000;2", "agi-1795854400.1", "agi-test", "100", 3)
    assert (env.callerid, env.calleridname, env.dnid, env.rdnis) == ("+15551234", "Jane Doe", "unknown", "unknown")
    assert env.accountcode == ""  # "agi_accountcode: " with its trailing space
    assert (env.language, env.version) == ("en", "22.10.1+dfsg+~cs6.17.60671434-1")
    assert env.raw["agi_threadid"] == "140207326172864"
    assert len(env.raw) == 24


def test_the_environment_repr_keeps_caller_data_out_of_logs() -> None:
    text = repr(parse_environment(REAL_ENVIRONMENT))
    assert "agi-1795854400.1" in text and "admit" in text
    assert "15551234" not in text and "Jane" not in text and "did" not in text


def test_the_blank_line_may_be_left_off_and_crlf_is_tolerated() -> None:
    assert parse_environment(REAL_ENVIRONMENT.rstrip(b"\n")).args == ("first arg", "second")
    assert parse_environment(REAL_ENVIRONMENT.replace(b"\n", b"\r\n")).script == "admit"


def test_an_environment_line_is_checked_on_its_own() -> None:
    assert parse_environment_line(b"agi_network_script: admit?did=1\n") == ("agi_network_script", "admit?did=1")
    assert parse_environment_line(b"agi_accountcode: \n") == ("agi_accountcode", "")
    assert parse_environment_line(b"agi_x:no-space") == ("agi_x", "no-space")
    assert parse_environment_line(b"agi_channel: PJSIP/a: b\n") == ("agi_channel", "PJSIP/a: b")


@pytest.mark.parametrize(
    ("text", "script", "params"),
    [
        ("admit?did=100&x=1", "admit", {"did": "100", "x": "1"}),
        ("admit", "admit", {}),
        ("/admit/", "admit", {}),
        ("release?token=abc", "release", {"token": "abc"}),
        ("admit?did=+15551234", "admit", {"did": "+15551234"}),  # a plus stays a plus: Asterisk does not encode
        ("admit?did=%2B15551234&name=J%C3%BCrgen%20K", "admit", {"did": "+15551234", "name": "Jürgen K"}),
        ("admit?flag&a=", "admit", {"flag": "", "a": ""}),
        ("admit?a=1&&b=2&", "admit", {"a": "1", "b": "2"}),
        ("admit?a=b=c", "admit", {"a": "b=c"}),
        ("admit?", "admit", {}),
        ("", "", {}),
        ("v1/admit?did=1", "v1/admit", {"did": "1"}),
    ],
)
def test_network_script_splits_route_and_query(text: str, script: str, params: dict[str, str]) -> None:
    got_script, got_params = parse_network_script(text)
    assert (got_script, dict(got_params)) == (script, params)


SECRET = "+15551234"  # a caller's number: must never appear in an error message


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"", "empty environment"),
        (b"\n", "empty environment"),
        (b"agi_network: yes\nGET / HTTP/1.1\n\n", "environment line 2 has no colon"),
        (b"agi_network: yes\nHost: example\n\n", "environment line 2: 'Host' is not an agi_* variable name"),
        (b"agi_network_script: a\nagi_callerid: \xff" + SECRET.encode() + b"\n\n",
         "environment line 2 is not UTF-8 (bad byte at offset 14)"),
        (REAL_ENVIRONMENT_WITHOUT_SCRIPT, "environment has no agi_network_script: the AGI URL names no script"),
        (b"agi_network_script: a\nagi_callerid: 1\nagi_callerid: " + SECRET.encode() + b"\n",
         "environment repeats agi_callerid (line 3)"),
        (b"agi_network_script: a\n\nagi_callerid: " + SECRET.encode() + b"\n",
         "environment goes on after its blank line (line 2)"),
        (b"agi_network_script: a\nagi_arg_1: x\nagi_arg_3: " + SECRET.encode() + b"\n",
         "environment has agi_arg_3 but no agi_arg_2"),
        (b"agi_network_script: a\nagi_priority: " + SECRET.encode() + b"x\n", "agi_priority '+15551234x' is not"),
        (b"agi_network_script: a?did=1&did=" + SECRET.encode() + b"\n", "query repeats the parameter 'did'"),
        (b"agi_network_script: a?did=%ff\n", "query parameter 1 is not UTF-8 once percent-decoded"),
        (b"agi_network_script: a?x=1&=" + SECRET.encode() + b"\n", "query parameter 2 has no name"),
        (b"agi_network_script: a\nagi_x: " + b"9" * 40_000 + b"\n",
         "environment of 40030 bytes is over the limit of 32768"),
    ],
)
def test_malformed_environments_are_refused_with_what_was_wrong(block: bytes, message: str) -> None:
    with pytest.raises(AgiProtocolError) as caught:
        parse_environment(block)
    text = str(caught.value)
    assert text.startswith(message), text
    assert len(text) < 200
    assert SECRET.lstrip("+") not in text.replace("'+15551234x'", "")  # only agi_priority's own value is quoted


def test_a_huge_garbage_key_is_not_echoed() -> None:
    with pytest.raises(AgiProtocolError) as caught:
        parse_environment_line(b"X" * 10_000 + b": y")
    assert len(str(caught.value)) < 120


def test_the_size_limit_can_be_lowered() -> None:
    with pytest.raises(AgiProtocolError, match="environment of 585 bytes is over the limit of 100"):
        parse_environment(REAL_ENVIRONMENT, max_bytes=100)


# ---------------------------------------------------------------------------------------------- commands


def asterisk_words(line: str) -> list[str]:
    """How res_agi's parse_args splits a command line (a model written for these tests): spaces and tabs end a
    word outside quotes, a double quote toggles quoting (and starts a word after whitespace), a backslash makes
    the next character literal."""
    words: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for char in line.rstrip("\n"):
        if char == '"' and not escaped:
            quoted = not quoted
            if current is None:
                current = []
            continue
        if char in " \t" and not quoted and not escaped:
            if current is not None:
                words.append("".join(current))
                current = None
            continue
        if char == "\\" and not escaped:
            escaped = True
            continue
        if current is None:
            current = []
        current.append(char)
        escaped = False
    if current is not None:
        words.append("".join(current))
    return words


@pytest.mark.parametrize(
    ("name", "args", "line"),
    [
        ("ANSWER", (), b"ANSWER\n"),
        ("SET VARIABLE", ("A", "1"), b'SET VARIABLE "A" "1"\n'),
        # the line that set B='two "quoted" words \ back' on Asterisk 22.10.1
        ("SET VARIABLE", ("B", 'two "quoted" words \\ back'), b'SET VARIABLE "B" "two \\"quoted\\" words \\\\ back"\n'),
        ("STREAM FILE", ("beep", ""), b'STREAM FILE "beep" ""\n'),
        ("VERBOSE", ("hello (there)", "1"), b'VERBOSE "hello (there)" "1"\n'),
        ("SET VARIABLE", ("N", "J\u00fcrgen\t\u00e9"), 'SET VARIABLE "N" "J\u00fcrgen\t\u00e9"\n'.encode()),
    ],
)
def test_commands_are_quoted_the_way_asterisk_reads_them(name: str, args: tuple[str, ...], line: bytes) -> None:
    assert format_command(name, *args) == line
    assert asterisk_words(line.decode()) == [*name.split(), *args]


@pytest.mark.parametrize(
    "value",
    ["", " ", '"', "\\", '\\"', '""', "a\\", 'x "y" z', "\\\\n", "tab\there", "  lead and trail  ", "%s %d",
     "'single'", "(paren", "é€😀", "a" * 1000],
)
def test_every_argument_survives_asterisks_parser(value: str) -> None:
    line = format_command("SET VARIABLE", "NAME", value).decode()
    assert asterisk_words(line) == ["SET", "VARIABLE", "NAME", value]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("SET VARIABLE", ("A", "1\nHANGUP"), "argument 2 of AGI SET VARIABLE holds a line break or NUL"),
        ("SET VARIABLE", ("A\r", "1"), "argument 1 of AGI SET VARIABLE holds a line break or NUL"),
        ("VERBOSE", ("a\x00b",), "argument 1 of AGI VERBOSE holds a line break or NUL"),
        ("SET VARIABLE\nHANGUP", (), "AGI command name 'SET VARIABLE\\nHANGUP' is not words of letters"),
        ("", (), "AGI command name '' is not words of letters"),
        ("SET  VARIABLE", (), "AGI command name"),
        ('EXEC "x"', (), "AGI command name"),
        ("VERBOSE", ("\ud800",), "an argument of AGI VERBOSE cannot be encoded as UTF-8"),
        ("EXEC", tuple("a" * MAX_COMMAND_WORDS), f"AGI EXEC has 128 words; Asterisk keeps only {MAX_COMMAND_WORDS}"),
        ("SET VARIABLE", ("A", "x" * 2100), "AGI SET VARIABLE is 2120 bytes, over the 2047 Asterisk reads as one line"),
    ],
)
def test_unsafe_commands_are_refused(name: str, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(AgiProtocolError) as caught:
        format_command(name, *args)
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_longest_line_asterisk_reads_whole_is_allowed() -> None:
    overhead = len(b'SET VARIABLE "A" ""\n')
    assert len(format_command("SET VARIABLE", "A", "x" * (MAX_COMMAND_LINE - overhead))) == MAX_COMMAND_LINE
    with pytest.raises(AgiProtocolError):
        format_command("SET VARIABLE", "A", "x" * (MAX_COMMAND_LINE - overhead + 1))


def test_a_non_string_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="argument 2 of AGI SET VARIABLE is int, not str"):
        format_command("SET VARIABLE", "A", 1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- replies


def _reply(code: int, result: str = "", data: str | None = None, extra: dict[str, str] | None = None,
           message: str = "", usage: str = "") -> AgiReply:
    return AgiReply(code=code, result=result, data=data, extra=extra or {}, message=message, usage=usage)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # replies recorded from Asterisk 22.10.1
        (b"200 result=1\n", _reply(200, "1")),
        (b"200 result=0\n", _reply(200, "0")),
        (b'200 result=1 (two "quoted" words \\ back)\n', _reply(200, "1", 'two "quoted" words \\ back')),
        (b"200 result=1 (1)\n", _reply(200, "1", "1")),
        (b"200 result= (timeout)\n", _reply(200, "", "timeout")),
        (b"200 result=0 endpos=3404\n", _reply(200, "0", None, {"endpos": "3404"})),
        (b"510 Invalid or unknown command\n", _reply(510, message="Invalid or unknown command")),
        (b"511 Command Not Permitted on a dead channel or intercept routine\n",
         _reply(511, message="Command Not Permitted on a dead channel or intercept routine")),
        (b"520-Invalid command syntax.  Proper usage follows:\nSets a variable to the current channel.\n"
         b"520 End of proper usage.\n",
         _reply(520, message="Invalid command syntax.  Proper usage follows:",
                usage="Sets a variable to the current channel.")),
        (b"HANGUP\n", _reply(HANGUP_CODE)),
        # the other formats res_agi.c writes
        (b"200 result=-1\n", _reply(200, "-1")),
        (b"200 result=-1 endpos=0\n", _reply(200, "-1", None, {"endpos": "0"})),
        (b"200 result=0 (timeout) endpos=8000\n", _reply(200, "0", "timeout", {"endpos": "8000"})),
        (b"200 result=49 (dtmf) endpos=1234\n", _reply(200, "49", "dtmf", {"endpos": "1234"})),
        (b"200 result=0012\n", _reply(200, "0012")),
        (b"520 Invalid command syntax.  Proper usage not available.\n",
         _reply(520, message="Invalid command syntax.  Proper usage not available.")),
        (b"520-Invalid command syntax.  Proper usage follows:\n Usage: X\n\n  more\n520 End of proper usage.\n",
         _reply(520, message="Invalid command syntax.  Proper usage follows:", usage=" Usage: X\n\n  more")),
        (b'200 result=1 (speech) endpos=0 results=1 score0=900 text0="hello world" grammar0=yes\n',
         _reply(200, "1", "speech", {"endpos": "0", "results": "1", "score0": "900", "text0": "hello world",
                                     "grammar0": "yes"})),
        # a variable's value with parentheses of its own
        (b"200 result=1 (f(x) = (y))\n", _reply(200, "1", "f(x) = (y)")),
        (b"200 result=1 (a) endpos=5) endpos=7\n", _reply(200, "1", "a) endpos=5", {"endpos": "7"})),
        (b"200 result=1 ()\n", _reply(200, "1", "")),
        (b"200 result=1", _reply(200, "1")),  # without its newline
        (b"200 result=1\r\n", _reply(200, "1")),
        (b"999 Something new\n", _reply(999, message="Something new")),
    ],
)
def test_replies_parse_into_typed_fields(line: bytes, expected: AgiReply) -> None:
    assert parse_reply(line) == expected


def test_reply_flags() -> None:
    assert parse_reply(b"HANGUP\n").hangup and not parse_reply(b"200 result=1\n").hangup
    assert parse_reply(b"511 Command Not Permitted on a dead channel or intercept routine\n").dead
    assert parse_reply(b"510 Invalid or unknown command\n").invalid
    assert parse_reply(b"520 Invalid command syntax.  Proper usage not available.\n").invalid
    ok = parse_reply(b"200 result=-1 endpos=0\n")
    assert ok.ok and not ok.invalid and ok.result_int == -1
    assert parse_reply(b"200 result= (timeout)\n").result_int is None


def test_a_reply_description_leaves_the_data_out() -> None:
    reply = parse_reply(b"200 result=1 (+15551234)\n")
    assert reply.describe() == "200 result=1"
    assert "15551234" not in repr(reply)
    assert parse_reply(b"HANGUP\n").describe() == "HANGUP"
    assert parse_reply(b"510 Invalid or unknown command\n").describe() == "510 Invalid or unknown command"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty reply line"),
        (b"\n", "empty reply line"),
        (b"hello\n", "reply line of 5 characters starts with neither a 3-digit code nor HANGUP: 'hello'"),
        (b"20 result=1\n", "reply line of 11 characters starts with neither"),
        (b"hangup\n", "reply line of 6 characters starts with neither"),
        (b"200 foo\n", "200 reply without result="),
        (b"200\n", "200 reply without result="),
        (b"200 result=1 (unclosed\n", "200 reply has an unclosed '(' after result="),
        (b"200 result=1 junk\n", "200 reply has text after result= that is neither (data) nor key=value"),
        (b"200 result=1 (x) junk\n", "200 reply has an unclosed '(' after result="),
        (b"200 result=1 endpos=\"open\n", "200 reply has text after result= that is neither"),
        (b"\xff\xfe\n", "reply is not UTF-8 (bad byte at offset 0)"),
        (b"520-Invalid command syntax.  Proper usage follows:\n", "multi-line 520 reply has only its first line"),
        (b"200 result=1\n200 result=1\n", "reply of 2 lines whose first line does not start with 'NNN-'"),
        (b"520-x\nusage\n510 End\n", "multi-line 520 reply does not end with a '520 ' line"),
        (b"200 result=1 (" + b"x" * 40_000 + b")\n", "reply of 40016 bytes is over the limit of 32768"),
    ],
)
def test_malformed_replies_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(AgiProtocolError) as caught:
        parse_reply(data)
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("line", "terminator"),
    [
        (b"520-Invalid command syntax.  Proper usage follows:\n", b"520 "),
        (b"520 Invalid command syntax.  Proper usage not available.\n", None),
        (b"200 result=1\n", None),
        (b"HANGUP\n", None),
        (b"20-x\n", None),
        (b"abc-x\n", None),
    ],
)
def test_reply_terminator_tells_how_much_to_read(line: bytes, terminator: bytes | None) -> None:
    assert reply_terminator(line) == terminator
