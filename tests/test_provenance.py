"""Which code made a report: the commit RTMON_COMMIT names, else git's, and the packages'
versions from their metadata."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rtmon.provenance import COMMIT_ENV, checkout, package_versions, software_line


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_a_checkout_gives_its_commit_and_whether_tracked_files_changed(tmp_path, monkeypatch):
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "untracked.txt").write_text("x")  # untracked files do not make it dirty
    assert checkout(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert checkout(tmp_path) == {"commit": head, "dirty": True}
    monkeypatch.setenv(COMMIT_ENV, "cd" * 20)  # named by the caller: a copy whose git folder may be stale
    assert checkout(tmp_path) == {"commit": "cd" * 20, "dirty": None}


def test_a_copy_without_git_takes_the_commit_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    assert checkout(tmp_path) == {"commit": None, "dirty": None}
    monkeypatch.setenv(COMMIT_ENV, "ab" * 20)
    assert checkout(tmp_path) == {"commit": "ab" * 20, "dirty": None}


def test_versions_come_from_metadata_and_a_missing_package_is_none():
    versions = package_versions(("numpy", "no-such-distribution-rtmon"))
    assert versions["numpy"] and versions["no-such-distribution-rtmon"] is None


def test_the_markdown_line_names_the_commit_and_only_installed_packages():
    line = software_line({"commit": "0123456789abcdef" * 2, "dirty": True,
                          "packages": {"torch": "2.11.0", "tensorrt-rtx-cu13": None}})
    assert line == "- software: rtmon commit 0123456789ab with uncommitted changes; torch 2.11.0"
    assert software_line({"commit": None, "dirty": None, "packages": {}}) == "- software: rtmon commit unknown"
    assert software_line(None) is None  # a report made before the block was kept
