"""The two Asterisk instances of the private test bed, rendered and run from one root.

* **pbx**: the administrator's PBX. Its configuration is the project's ``dialplan/`` files, copied unchanged
  except for ports and passwords, plus ``pjsip_local.conf`` (the trunk to the carrier, agent endpoints).
* **carrier**: the outside world. It places calls into the pbx over a PJSIP trunk and answers the pbx's
  calls to agent endpoints; a Python ARI app controls every simulated caller and agent.

Each instance runs as ``unshare -m`` + bind mount of the instances folder at ``ROOT/inst`` + ``chroot``, so
nothing outside the project's ``.pbx/`` folder is touched and the mount vanishes with the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from asterisk_agent.pbx.root import PbxError, root_dir, write_name_service

PBX = "pbx"
CARRIER = "carrier"
CARRIER_APP = "carrier"
AGENT_NAMES = ("operator", "agent1", "agent2", "agent3", "agent4")
SHIPPED_FILES = (
    "extensions.conf", "pjsip.conf", "ari.conf", "http.conf", "manager.conf", "rtp.conf", "musiconhold.conf",
    "modules.conf", "prometheus.conf", "queues.conf",
)


@dataclass(frozen=True)
class Ports:
    sip: int
    http: int
    ami: int
    rtp_start: int
    rtp_end: int


@dataclass(frozen=True)
class PortPlan:
    """Ports of both instances. Slot 0 is the default; slots 1-4 let suites run side by side."""

    pbx: Ports
    carrier: Ports
    slot: int = 0

    @property
    def folder_name(self) -> str:
        """The instances folder of this slot (bind-mounted at ROOT/inst), so side-by-side suites never share."""
        return "inst" if self.slot == 0 else f"inst-{self.slot}"

    @classmethod
    def for_slot(cls, slot: int) -> PortPlan:
        if not 0 <= slot <= 4:
            raise PbxError(f"port slot must be 0-4, not {slot}")
        step = 100 * slot
        rtp = 10000 + 10000 * slot
        return cls(
            pbx=Ports(5060 + step, 8088 + step, 5038 + step, rtp, rtp + 4999),
            carrier=Ports(5062 + step, 8090 + step, 5040 + step, rtp + 5000, rtp + 9999),
            slot=slot,
        )

    @classmethod
    def from_env(cls) -> PortPlan:
        return cls.for_slot(int(os.environ.get("ASTERISK_AGENT_PBX_SLOT", "0")))


@dataclass(frozen=True)
class Credentials:
    ari_user: str
    ari_password: str
    ami_user: str
    ami_secret: str


def set_option(text: str, section: str, key: str, value: str) -> str:
    """Replace ``key = ...`` inside ``[section]`` of an Asterisk .conf text; raise if it is not there."""
    lines = text.splitlines(keepends=True)
    current = None
    header = re.compile(r"^\[([^\]]+)\]")
    option = re.compile(rf"^(\s*{re.escape(key)}\s*=>?\s*)([^;\n]*?)(\s*(;.*)?)$")
    for index, line in enumerate(lines):
        found = header.match(line)
        if found:
            current = found.group(1)
            continue
        if current == section:
            matched = option.match(line.rstrip("\n"))
            if matched:
                newline = "\n" if line.endswith("\n") else ""
                lines[index] = f"{matched.group(1)}{value}{matched.group(3)}{newline}"
                return "".join(lines)
    raise PbxError(f"cannot set {key} in [{section}]: not found in the shipped file")


def _template(instance: str, name: str) -> str:
    return resources.files("asterisk_agent.pbx").joinpath("templates").joinpath(instance).joinpath(name).read_text()


def _fill(text: str, values: Mapping[str, object]) -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    leftover = re.search(r"@@[A-Z_]+@@", text)
    if leftover:
        raise PbxError(f"template placeholder {leftover.group(0)} has no value")
    return text


class Instance:
    """One Asterisk process of the test bed."""

    def __init__(
        self, name: str, home: Path, ports: Ports, credentials: Credentials, folder_name: str = "inst"
    ) -> None:
        self.name = name
        self.home = home
        self.folder_name = folder_name
        self.ports = ports
        self.credentials = credentials
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def folder(self) -> Path:
        return self.home / self.folder_name / self.name

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def pid_file(self) -> Path:
        return self.folder / "instance.json"

    def _prepare_folders(self) -> Path:
        etc = self.folder / "etc"
        if etc.exists():
            shutil.rmtree(etc)
        for sub in ("etc", "run", "log", "db", "keys", "cache", "spool/recording", "spool/tmp"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        values = {"NAME": self.name}
        for name in ("asterisk.conf", "logger.conf", "indications.conf"):
            (etc / name).write_text(_fill(_template("common", name), values))
        return etc

    def render_pbx(self, dialplan: Path, carrier: Ports) -> None:
        etc = self._prepare_folders()
        creds = self.credentials
        for name in SHIPPED_FILES:
            source = dialplan / name
            if not source.is_file():
                raise PbxError(f"the dialplan folder {dialplan} has no {name}")
            text = source.read_text()
            if name == "pjsip.conf":
                text = set_option(text, "transport-udp", "bind", f"127.0.0.1:{self.ports.sip}")
            elif name == "http.conf":
                text = set_option(text, "general", "bindport", str(self.ports.http))
            elif name == "manager.conf":
                text = set_option(text, "general", "port", str(self.ports.ami))
                text = set_option(text, creds.ami_user, "secret", creds.ami_secret)
            elif name == "rtp.conf":
                text = set_option(text, "general", "rtpstart", str(self.ports.rtp_start))
                text = set_option(text, "general", "rtpend", str(self.ports.rtp_end))
            elif name == "ari.conf":
                text = set_option(text, creds.ari_user, "password", creds.ari_password)
            (etc / name).write_text(text)
        agents = "\n".join(
            f"[{agent}](agent-endpoint)\naors = {agent}\n\n[{agent}]\ntype = aor\n"
            f"contact = sip:{agent}@127.0.0.1:{carrier.sip}\n"
            for agent in AGENT_NAMES
        )
        (etc / "pjsip_local.conf").write_text(
            _fill(_template(PBX, "pjsip_local.conf"), {"CARRIER_SIP": carrier.sip, "AGENT_ENDPOINTS": agents})
        )

    def render_carrier(self, dialplan: Path, pbx: Ports) -> None:
        etc = self._prepare_folders()
        values: dict[str, object] = {
            "SIP": self.ports.sip, "HTTP": self.ports.http, "AMI": self.ports.ami,
            "RTP_START": self.ports.rtp_start, "RTP_END": self.ports.rtp_end, "PBX_SIP": pbx.sip,
            "APP": CARRIER_APP, "USER": self.credentials.ari_user, "PASSWORD": self.credentials.ari_password,
        }
        folder = resources.files("asterisk_agent.pbx").joinpath("templates").joinpath(CARRIER)
        for entry in folder.iterdir():
            if entry.name.endswith(".conf"):
                (etc / entry.name).write_text(_fill(entry.read_text(), values))
        shutil.copyfile(dialplan / "modules.conf", etc / "modules.conf")

    # --- process ----------------------------------------------------------------------------------------

    def command(self, root: Path) -> list[str]:
        unshare = ["unshare", "-m", "--propagation", "private"]
        if os.geteuid() != 0:
            unshare.insert(1, "-r")
        script = 'mount --bind "$0" "$1/inst" && exec chroot "$1" asterisk -C "$2" -f -n'
        return [*unshare, "sh", "-c", script, str(self.home / self.folder_name), str(root),
                f"/inst/{self.name}/etc/asterisk.conf"]

    def start(self, *, timeout_s: float = 20.0) -> None:
        """Start Asterisk and wait until ARI answers; raise PbxError with the log's tail if it does not."""
        root = root_dir(self.home)
        if not (root / "usr" / "sbin" / "asterisk").exists():
            raise PbxError("the private Asterisk root is not built: run `asterisk-agent pbx build` as root")
        self.stop_stale()
        self._check_ports_free()
        log = (self.folder / "log" / "console.log").open("wb")
        self.process = subprocess.Popen(
            self.command(root), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pid_file.write_text(json.dumps({"pid": self.process.pid, "ports": asdict(self.ports)}))
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise PbxError(f"{self.name}: Asterisk exited at start (code {self.process.returncode}): "
                               f"{self._log_tail()}")
            if self.ari_answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise PbxError(f"{self.name}: ARI did not answer on port {self.ports.http} within {timeout_s} s: "
                               f"{self._log_tail()}")
            time.sleep(0.05)

    def _check_ports_free(self) -> None:
        """Refuse to start on ports someone else holds (another test bed answering ARI would fool us)."""
        for kind, port in ((socket.SOCK_STREAM, self.ports.http), (socket.SOCK_STREAM, self.ports.ami),
                           (socket.SOCK_DGRAM, self.ports.sip)):
            with socket.socket(socket.AF_INET, kind) as probe:
                if kind == socket.SOCK_STREAM:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    raise PbxError(
                        f"{self.name}: port {port} on 127.0.0.1 is in use (another test bed? "
                        "set ASTERISK_AGENT_PBX_SLOT=1..4 to run side by side)"
                    ) from None

    def ari_answers(self) -> bool:
        token = b64encode(f"{self.credentials.ari_user}:{self.credentials.ari_password}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - an http:// URL we built
            f"{self.ari_url}/ari/asterisk/info", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310 - loopback http
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self) -> str:
        try:
            text = (self.folder / "log" / "console.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-5:])

    def recorded_pid(self) -> int | None:
        try:
            return int(json.loads(self.pid_file.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def cli(self, command: str, *, timeout_s: float = 10.0) -> str:
        """Run an Asterisk CLI command inside the running instance."""
        pid = self.process.pid if self.process else self.recorded_pid()
        if pid is None or not _alive(pid):
            raise PbxError(f"{self.name} is not running")
        root = root_dir(self.home)
        nsenter = ["nsenter", "-t", str(pid), "-m"]
        if os.geteuid() != 0:
            nsenter[1:1] = ["-U", "--preserve-credentials"]
        result = subprocess.run(
            [*nsenter, "chroot", str(root), "asterisk", "-C", f"/inst/{self.name}/etc/asterisk.conf", "-rx", command],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
        return result.stdout + result.stderr

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """``core stop now``; SIGTERM then SIGKILL by pid as the last resort."""
        pid = self.process.pid if self.process else self.recorded_pid()
        if pid is not None and _alive(pid):
            with contextlib.suppress(PbxError, subprocess.TimeoutExpired):
                self.cli("core stop now", timeout_s=timeout_s)
            if not self._wait_gone(pid, timeout_s):
                _signal(pid, signal.SIGTERM)
                if not self._wait_gone(pid, 2.0):
                    _signal(pid, signal.SIGKILL)
                    self._wait_gone(pid, 2.0)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)
            self.process = None
        self.pid_file.unlink(missing_ok=True)

    def stop_stale(self) -> None:
        """Stop an instance a previous run left (e.g. a killed test run) before starting on its ports."""
        pid = self.recorded_pid()
        if pid is not None and _alive(pid) and self.process is None:
            self.stop()

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.pid == pid:
                if self.process.poll() is not None:
                    return True
            elif not _alive(pid):
                return True
            time.sleep(0.02)
        return False

    def is_running(self) -> bool:
        pid = self.process.pid if self.process else self.recorded_pid()
        return pid is not None and _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except (OSError, IndexError):
        return False


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass
class TestBed:
    """Both instances of the private Asterisk, started and stopped together."""

    __test__ = False  # not a pytest test class

    home: Path
    dialplan: Path
    plan: PortPlan
    pbx: Instance
    carrier: Instance

    @classmethod
    def create(cls, home: Path, dialplan: Path, plan: PortPlan | None = None) -> TestBed:
        plan = plan or PortPlan.from_env()
        pbx_creds = Credentials("asterisk-agent", "testbed-ari-secret", "asterisk-agent", "testbed-ami-secret")
        carrier_creds = Credentials("carrier", "carrier-ari-secret", "carrier", "carrier-ami-secret")
        return cls(
            home=home, dialplan=dialplan.resolve(), plan=plan,
            pbx=Instance(PBX, home, plan.pbx, pbx_creds, plan.folder_name),
            carrier=Instance(CARRIER, home, plan.carrier, carrier_creds, plan.folder_name),
        )

    def start(self) -> None:
        write_name_service(root_dir(self.home))
        self.pbx.render_pbx(self.dialplan, self.plan.carrier)
        self.carrier.render_carrier(self.dialplan, self.plan.pbx)
        self.pbx.start()
        try:
            self.carrier.start()
        except PbxError:
            self.pbx.stop()
            raise

    def stop(self) -> None:
        for instance in (self.carrier, self.pbx):
            instance.stop()
