"""Building the private Asterisk root: the clear errors, without building anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from asterisk_agent.pbx import root as pbx_root
from asterisk_agent.pbx.root import STAMP, PbxError, build_root, recipe_hash, root_is_current, write_name_service


def test_building_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PbxError, match="needs root"):
        build_root(tmp_path)


def _fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, code: int) -> None:
    """Put first on PATH an mmdebstrap that prints ``output`` and exits with ``code``."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "mmdebstrap"
    script.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")


@pytest.mark.skipif(os.geteuid() != 0, reason="the build path runs only as root")
def test_an_unreachable_registry_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mmdebstrap(tmp_path, monkeypatch, "E: Failed to fetch InRelease  Temporary failure resolving", 1)
    with pytest.raises(PbxError, match="registry cannot be reached"):
        build_root(tmp_path / "home")


@pytest.mark.skipif(os.geteuid() != 0, reason="the build path runs only as root")
def test_other_build_failures_point_at_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mmdebstrap(tmp_path, monkeypatch, "E: package asterisk has no installation candidate", 100)
    with pytest.raises(PbxError, match=r"mmdebstrap failed \(exit 100\); see .*build.log"):
        build_root(tmp_path / "home")


def test_missing_mmdebstrap_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PbxError, match="mmdebstrap is missing"):
        build_root(tmp_path / "home")


def test_a_root_is_rebuilt_only_when_the_package_list_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / STAMP).write_text(json.dumps({"recipe": recipe_hash(), "asterisk_version": "Asterisk 22"}))
    assert root_is_current(tmp_path)
    assert build_root(tmp_path) == root  # current: nothing runs, not even the root check
    monkeypatch.setattr(pbx_root, "PACKAGES", (*pbx_root.PACKAGES, "asterisk-mp3"))
    assert not root_is_current(tmp_path)


def test_names_resolve_from_files_only(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    (etc / "nsswitch.conf").write_text("passwd: files\nhosts:          files dns\n")
    write_name_service(tmp_path)
    assert "nameserver" not in (etc / "resolv.conf").read_text()
    assert "hosts:          files\n" in (etc / "nsswitch.conf").read_text()
    assert "127.0.0.1 localhost" in (etc / "hosts").read_text()
