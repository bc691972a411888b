"""The ``asterisk-agent`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from asterisk_agent.config import AriConfig, ConfigError, Settings, deployment_problems, load_config


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _load_checked(path: str | None, *, label: str) -> Settings | None:
    """Load a configuration and report on stderr what would break a deployment; None when unusable."""
    try:
        settings = load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return settings if _deployable(settings, label) else None


def _deployable(settings: Settings, label: str) -> bool:
    errors, warnings = deployment_problems(settings)
    for warning in warnings:
        print(f"warning: {label}{warning}", file=sys.stderr)
    for error in errors:
        print(f"error: {label}{error}", file=sys.stderr)
    return not errors


def cmd_run(args: argparse.Namespace) -> int:
    from asterisk_agent.worker import run_worker

    try:
        settings = load_config(args.config)
        flags = {"url": args.ari_url, "username": args.ari_user, "password": args.ari_password}
        given = {key: value for key, value in flags.items() if value}
        if given:  # command-line flags win over the file and the environment
            ari = AriConfig(**{**settings.ari.model_dump(), **given})
            settings = settings.model_copy(update={"ari": ari})
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not _deployable(settings, ""):
        return 2
    _setup_logging(settings.log_level)
    return asyncio.run(run_worker(settings))


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load_checked(args.file, label=f"{args.file}: ")
    if settings is None:
        return 1
    print(f"{args.file}: ok ({len(settings.accounts)} accounts, ARI {settings.ari.url}, app {settings.ari.app})")
    return 0


def cmd_pbx(args: argparse.Namespace) -> int:
    from asterisk_agent.pbx.instances import TestBed
    from asterisk_agent.pbx.root import PbxError, asterisk_version, build_root, default_home

    home = default_home()
    bed = TestBed.create(home, Path(args.dialplan))
    try:
        if args.action == "build":
            build_root(home, force=args.force)
            print(f"private Asterisk root ready: {asterisk_version(home)}")
        elif args.action == "up":
            build_root(home)
            bed.start()
            for instance in (bed.pbx, bed.carrier):
                print(f"{instance.name}: running, ARI {instance.ari_url}, SIP 127.0.0.1:{instance.ports.sip}")
        elif args.action == "down":
            bed.stop()
            print("pbx and carrier stopped")
        elif args.action == "status":
            for instance in (bed.pbx, bed.carrier):
                state = "running" if instance.is_running() else "stopped"
                answers = " (ARI answers)" if instance.ari_answers() else ""
                print(f"{instance.name}: {state}{answers}, ARI {instance.ari_url}")
            print(f"root: {asterisk_version(home)}")
        elif args.action == "cli":
            instance = bed.carrier if args.instance == "carrier" else bed.pbx
            print(instance.cli(" ".join(args.command)), end="")
    except PbxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from asterisk_agent.demo import run_demo

    return run_demo(calls=args.calls, json_path=args.json, dialplan=Path(args.dialplan))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asterisk-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the worker against an Asterisk (ARI)")
    run.add_argument("--config", "-c", help="YAML configuration file (defaults and environment otherwise)")
    run.add_argument("--ari-url", help="override ari.url, e.g. http://pbx.example:8088")
    run.add_argument("--ari-user", help="override ari.username")
    run.add_argument("--ari-password", help="override ari.password")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    pbx = sub.add_parser("pbx", help="the private Asterisk (pbx + carrier instances)")
    pbx.add_argument("action", choices=["build", "up", "down", "status", "cli"])
    pbx.add_argument("--force", action="store_true", help="build: rebuild the root even if current")
    pbx.add_argument("--instance", choices=["pbx", "carrier"], default="pbx", help="cli: which instance")
    pbx.add_argument("--dialplan", default="dialplan", help="the dialplan folder the pbx loads")
    pbx.add_argument("command", nargs="*", help="cli: the Asterisk CLI command")
    pbx.set_defaults(func=cmd_pbx)

    demo = sub.add_parser("demo", help="start the private Asterisk and the worker; place N real calls")
    demo.add_argument("--calls", type=int, default=10)
    demo.add_argument("--json", default="demo-result.json")
    demo.add_argument("--dialplan", default="dialplan")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
