"""The FastAGI protocol (Asterisk's res_agi) as pure functions over bytes: the environment Asterisk sends on
connect, the command lines we send, the replies it answers. No I/O here; :mod:`asterisk_agent.agi.server` reads
and writes the socket and calls these.

What this module relies on (res/res_agi.c, alike in Asterisk 18, 20 and 22):

- On connect Asterisk sends ``agi_network: yes``, then ``agi_network_script: SCRIPT`` only when the AGI URL has a
  path (everything after the first ``/`` behind ``host[:port]``, query string included, not decoded), then
  ``agi_request`` (the whole URL), the channel's fields, ``agi_arg_1..N`` (the ``AGI()`` arguments after the
  URL) and a blank line. Each line is ``key: value``; an empty value leaves ``key: `` with its space.
- Asterisk reads each command with ``fgets`` into a buffer of 2048 bytes (18, and 20/22 before mid-2025; 8192
  since): a longer line is cut and its remainder runs as a further command, so we refuse such lines. Words are
  split on spaces and tabs, double quotes group, a backslash makes the next character literal; at most 127.
- Replies: ``200 result=R [(data)] [key=value ...]``, ``510 Invalid or unknown command``, ``511 Command Not
  Permitted on a dead channel or intercept routine``, and 520 either on one line or as ``520-...``, usage
  lines, ``520 End of proper usage.``
- ``HANGUP`` is a line of its own that Asterisk sends when it notices the hangup between two commands: it is
  not the reply to a command, whose reply still follows.
- A line from us starting with ``failure`` ends the AGI with ``AGISTATUS=FAILURE``; closing the connection ends
  it with ``SUCCESS``.

Errors are :class:`AgiProtocolError` with what was wrong, never the input itself (it may hold caller data).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

from asterisk_agent.agi.errors import AgiProtocolError

DEFAULT_PORT = 4573  # Asterisk's AGI_PORT: what agi://host without a port connects to
MAX_ENVIRONMENT_BYTES = 32 * 1024  # a real environment is well under 1 KiB; this bounds a garbage one
MAX_REPLY_BYTES = 32 * 1024  # one reply, a multi-line 520 usage block included
MAX_COMMAND_LINE = 2047  # bytes with the newline: fgets into 2048 bytes in Asterisk 18 (and 20/22 until 2025)
MAX_COMMAND_WORDS = 127  # MAX_ARGS - 1 in res_agi: further words are dropped
FAILURE_LINE = b"FAILURE\n"  # ends the AGI with AGISTATUS=FAILURE, so the dialplan can fall back
HANGUP_CODE = 0  # AgiReply.code of the HANGUP line, which carries no code of its own

_KEY = re.compile(r"agi_[A-Za-z0-9_]+")
_ARG_KEY = re.compile(r"agi_arg_([1-9][0-9]{0,4})")
_COMMAND_NAME = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")
_STATUS = re.compile(r"([0-9]{3})(?: (.*))?")
_CONTINUATION = re.compile(r"([0-9]{3})-(.*)")
_SUCCESS = re.compile(r"result=(\S*)(.*)")
_PAIR = re.compile(r"[ \t]*([A-Za-z_][A-Za-z0-9_]*)=(\"(?:[^\"\\]|\\.)*\"|[^\s\"]*)")
_FORBIDDEN_IN_ARGUMENT = re.compile(r"[\n\r\x00]")


def _excerpt(text: str, limit: int = 24) -> str:
    """A short repr of untrusted text for an error message: enough to recognise, too short to flood a log."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AgiProtocolError(f"{what} is not UTF-8 (bad byte at offset {exc.start})") from None


# ---------------------------------------------------------------------------------------------- environment


@dataclass(frozen=True, slots=True, kw_only=True)
class AgiEnvironment:
    """What Asterisk said about one AGI request. Fields that may carry caller data stay out of ``repr`` so that
    logging an environment never logs a caller's number."""

    script: str  # the route: agi_network_script without its query, without leading or trailing "/"
    params: Mapping[str, str] = field(repr=False)  # the query of agi_network_script, percent-decoded
    args: tuple[str, ...] = field(repr=False)  # agi_arg_1..N: the AGI() arguments after the URL
    request: str = field(repr=False)  # agi_request: the whole agi:// URL
    channel: str
    uniqueid: str
    context: str
    extension: str
    priority: int
    callerid: str = field(repr=False)  # Asterisk sends "unknown" when there is none
    calleridname: str = field(repr=False)
    dnid: str = field(repr=False)
    rdnis: str = field(repr=False)
    accountcode: str
    language: str
    version: str
    raw: Mapping[str, str] = field(repr=False)  # every agi_* line as sent


def parse_environment_line(line: bytes, number: int = 1) -> tuple[str, str]:
    """One ``agi_name: value`` line (``number`` counts from 1, for the message) as ``(name, value)``. The server
    checks each line as it arrives, so that garbage is refused at once rather than when the blank line comes."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    text = _decode(line, f"environment line {number}")
    name, colon, value = text.partition(":")
    if not colon:
        raise AgiProtocolError(f"environment line {number} has no colon (expected 'agi_name: value')")
    if not _KEY.fullmatch(name):
        raise AgiProtocolError(f"environment line {number}: {_excerpt(name)} is not an agi_* variable name")
    return name, value[1:] if value.startswith(" ") else value


def parse_network_script(text: str) -> tuple[str, Mapping[str, str]]:
    """``admit?did=100&x=1`` -> ``("admit", {"did": "100", "x": "1"})``.

    Asterisk passes the query as the dialplan wrote it, not encoded, so ``+`` stays a plus (an E.164 number
    keeps its sign) and only ``%XX`` is decoded (what ``${URIENCODE()}`` produces). A repeated name is refused
    rather than guessed at: ``did=1&did=2`` is a dialplan mistake."""
    path, _, query = text.partition("?")
    params: dict[str, str] = {}
    for index, part in enumerate(query.split("&"), start=1):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        try:
            name = unquote(raw_name, errors="strict")
            value = unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise AgiProtocolError(f"query parameter {index} is not UTF-8 once percent-decoded") from None
        if not name:
            raise AgiProtocolError(f"query parameter {index} has no name")
        if name in params:
            raise AgiProtocolError(f"query repeats the parameter {_excerpt(name)}")
        params[name] = value
    return path.strip("/"), MappingProxyType(params)


def _arguments(raw: Mapping[str, str]) -> tuple[str, ...]:
    numbered: dict[int, str] = {}
    for name, value in raw.items():
        match = _ARG_KEY.fullmatch(name)
        if match:
            numbered[int(match[1])] = value
    for position in range(1, len(numbered) + 1):
        if position not in numbered:
            raise AgiProtocolError(f"environment has agi_arg_{max(numbered)} but no agi_arg_{position}")
    return tuple(numbered[position] for position in range(1, len(numbered) + 1))


def parse_environment(block: bytes, *, max_bytes: int = MAX_ENVIRONMENT_BYTES) -> AgiEnvironment:
    """The environment block Asterisk sends on connect, up to and including its blank line (which may be left
    off). Raise :class:`AgiProtocolError` for a block that is too large, a malformed or repeated line, data
    after the blank line, or a request that names no script (``agi://host:port`` without a path)."""
    if len(block) > max_bytes:
        raise AgiProtocolError(f"environment of {len(block)} bytes is over the limit of {max_bytes}")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in block.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise AgiProtocolError("empty environment")
    raw: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line:
            raise AgiProtocolError(f"environment goes on after its blank line (line {number})")
        name, value = parse_environment_line(line, number)
        if name in raw:
            raise AgiProtocolError(f"environment repeats {name} (line {number})")
        raw[name] = value
    if "agi_network_script" not in raw:
        raise AgiProtocolError(
            "environment has no agi_network_script: the AGI URL names no script (use agi://host:port/script)"
        )
    script, params = parse_network_script(raw["agi_network_script"])
    priority_text = raw.get("agi_priority", "0")
    try:
        priority = int(priority_text)
    except ValueError:
        raise AgiProtocolError(f"agi_priority {_excerpt(priority_text)} is not a number") from None
    return AgiEnvironment(
        script=script,
        params=params,
        args=_arguments(raw),
        request=raw.get("agi_request", ""),
        channel=raw.get("agi_channel", ""),
        uniqueid=raw.get("agi_uniqueid", ""),
        context=raw.get("agi_context", ""),
        extension=raw.get("agi_extension", ""),
        priority=priority,
        callerid=raw.get("agi_callerid", ""),
        calleridname=raw.get("agi_calleridname", ""),
        dnid=raw.get("agi_dnid", ""),
        rdnis=raw.get("agi_rdnis", ""),
        accountcode=raw.get("agi_accountcode", ""),
        language=raw.get("agi_language", ""),
        version=raw.get("agi_version", ""),
        raw=MappingProxyType(raw),
    )


# ---------------------------------------------------------------------------------------------- commands


def quote_argument(value: str) -> str:
    """``value`` as one word for res_agi's parser: in double quotes, with ``\\`` and ``"`` escaped by a
    backslash (the parser takes the character after any backslash literally, inside quotes or not)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(name: str, *args: str) -> bytes:
    """One command line, e.g. ``format_command("SET VARIABLE", "AGENT_SLOT", "a b")`` ->
    ``b'SET VARIABLE "AGENT_SLOT" "a b"\\n'``. Every argument is quoted, so an empty one survives.

    Raise :class:`AgiProtocolError` for a name that is not words of letters, an argument with a line break or
    NUL (it would end the line and inject a command of its own), or a line Asterisk would cut in two."""
    if not _COMMAND_NAME.fullmatch(name):
        raise AgiProtocolError(f"AGI command name {_excerpt(name)} is not words of letters")
    for position, arg in enumerate(args, start=1):
        if not isinstance(arg, str):
            raise TypeError(f"argument {position} of AGI {name} is {type(arg).__name__}, not str")
        if _FORBIDDEN_IN_ARGUMENT.search(arg):
            raise AgiProtocolError(
                f"argument {position} of AGI {name} holds a line break or NUL, which would inject a command"
            )
    words = len(name.split()) + len(args)
    if words > MAX_COMMAND_WORDS:
        raise AgiProtocolError(f"AGI {name} has {words} words; Asterisk keeps only {MAX_COMMAND_WORDS}")
    line = " ".join([name, *(quote_argument(arg) for arg in args)]) + "\n"
    try:
        encoded = line.encode("utf-8")
    except UnicodeEncodeError:
        raise AgiProtocolError(f"an argument of AGI {name} cannot be encoded as UTF-8") from None
    if len(encoded) > MAX_COMMAND_LINE:
        raise AgiProtocolError(
            f"AGI {name} is {len(encoded)} bytes, over the {MAX_COMMAND_LINE} Asterisk reads as one line "
            "(a longer line runs as two commands)"
        )
    return encoded


# ---------------------------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True, kw_only=True)
class AgiReply:
    """One reply. ``200 result=1 (data) endpos=12`` gives ``code=200, result="1", data="data",
    extra={"endpos": "12"}``; other codes keep their text in ``message`` (and a 520's usage lines in
    ``usage``); the ``HANGUP`` line has code :data:`HANGUP_CODE`."""

    code: int
    result: str = ""  # text after result=: "1", "-1", "0", the digits of GET DATA, or "" (GET DATA, nothing)
    data: str | None = field(default=None, repr=False)  # text in parentheses (a variable's value), else None
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)  # key=value after the data
    message: str = ""  # for codes other than 200: the text after the code
    usage: str = field(default="", repr=False)  # 520: the usage lines between its first and last line

    @property
    def hangup(self) -> bool:
        """The ``HANGUP`` line: the channel hung up."""
        return self.code == HANGUP_CODE

    @property
    def dead(self) -> bool:
        """511: the command is not permitted on a dead channel (it hung up)."""
        return self.code == 511

    @property
    def invalid(self) -> bool:
        """510 (unknown command) or 520 (wrong usage): a mistake on our side."""
        return self.code in (510, 520)

    @property
    def ok(self) -> bool:
        """200: the command ran (``result`` says how it went: -1 is usually a failure)."""
        return self.code == 200

    @property
    def result_int(self) -> int | None:
        """``result`` as a number, None when it is not one."""
        try:
            return int(self.result)
        except ValueError:
            return None

    def describe(self) -> str:
        """A short description for logs and errors, without ``data`` (it may hold caller data)."""
        if self.hangup:
            return "HANGUP"
        if self.ok:
            return f"200 result={self.result}"
        return f"{self.code} {self.message}"


def reply_terminator(first_line: bytes) -> bytes | None:
    """For the first line of a reply: None when it is the whole reply, else the start of the line that ends it
    (``b"520 "`` for ``b"520-Invalid command syntax.  Proper usage follows:"``). Lets the reader know how much
    to read before :func:`parse_reply`."""
    if len(first_line) >= 4 and first_line[:3].isdigit() and first_line[3:4] == b"-":
        return first_line[:3] + b" "
    return None


def _pairs(text: str) -> dict[str, str] | None:
    """``key=value`` words (a value may be double-quoted), or None when ``text`` is anything else."""
    pairs: dict[str, str] = {}
    position = 0
    end = len(text.rstrip(" \t"))
    while position < end:
        match = _PAIR.match(text, position)
        if match is None or match.end() == position:
            return None
        if match.end() < end and text[match.end()] not in " \t":
            return None
        value = match[2]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[match[1]] = value
        position = match.end()
    return pairs


def _parse_success(rest: str) -> AgiReply:
    match = _SUCCESS.fullmatch(rest)
    if match is None:
        raise AgiProtocolError("200 reply without result=")
    result, tail = match[1], match[2]
    if tail and not tail.startswith(" "):
        raise AgiProtocolError("200 reply: result= is not followed by a space")
    stripped = tail.lstrip(" ")
    if not stripped.startswith("("):
        extra = _pairs(stripped)
        if extra is None:
            raise AgiProtocolError("200 reply has text after result= that is neither (data) nor key=value")
        return AgiReply(code=200, result=result, extra=extra)
    # The data may itself hold parentheses (a variable's value): it ends at the last ")" followed by nothing but
    # key=value words.
    close = len(stripped)
    while (close := stripped.rfind(")", 0, close)) > 0:
        extra = _pairs(stripped[close + 1 :])
        if extra is not None:
            return AgiReply(code=200, result=result, data=stripped[1:close], extra=extra)
    raise AgiProtocolError("200 reply has an unclosed '(' after result=")


def parse_reply(data: bytes) -> AgiReply:
    """One reply: a single line, or a whole multi-line block (``520-...`` through ``520 ...``, as
    :func:`reply_terminator` delimits it), with or without its final newline. Raise :class:`AgiProtocolError`
    for anything else: the reader cannot stay in step with Asterisk after it."""
    if len(data) > MAX_REPLY_BYTES:
        raise AgiProtocolError(f"reply of {len(data)} bytes is over the limit of {MAX_REPLY_BYTES}")
    text = _decode(data, "reply")
    if text.endswith("\n"):
        text = text[:-1]
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    first = lines[0]
    if not first:
        raise AgiProtocolError("empty reply line")
    continuation = _CONTINUATION.fullmatch(first)
    if len(lines) > 1:
        if continuation is None:
            raise AgiProtocolError(f"reply of {len(lines)} lines whose first line does not start with 'NNN-'")
        code = continuation[1]
        if not lines[-1].startswith(code + " "):
            raise AgiProtocolError(f"multi-line {code} reply does not end with a '{code} ' line")
        return AgiReply(code=int(code), message=continuation[2], usage="\n".join(lines[1:-1]))
    if continuation is not None:
        raise AgiProtocolError(f"multi-line {continuation[1]} reply has only its first line")
    if first == "HANGUP":
        return AgiReply(code=HANGUP_CODE)
    status = _STATUS.fullmatch(first)
    if status is None:
        raise AgiProtocolError(
            f"reply line of {len(first)} characters starts with neither a 3-digit code nor HANGUP: "
            f"{_excerpt(first, 12)}"
        )
    code, rest = int(status[1]), status[2] or ""
    if code == 200:
        return _parse_success(rest)
    return AgiReply(code=code, message=rest)
