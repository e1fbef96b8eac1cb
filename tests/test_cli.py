"""The trio-realtime command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import trio_realtime
from trio_realtime._cli import main
from trio_realtime._journal import open_journal


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_realtime", *args], capture_output=True, text=True, timeout=60
    )


def test_version_and_help() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"trio-realtime {trio_realtime.__version__}"
    out = run("--help")
    assert out.returncode == 0
    assert "journal" in out.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: trio-realtime" in capsys.readouterr().out


async def test_journal_inspect(tmp_path: Path) -> None:
    directory = os.fspath(tmp_path / "j")
    async with open_journal(directory) as journal:
        for seq in range(1, 6):
            await journal.append(seq, b"{}")
        await journal.ack(2)
        await journal.set_cursor("room:1", 17, "e1")
    out = run("journal", "inspect", directory)
    assert out.returncode == 0, out.stderr
    assert "last_seq:   5" in out.stdout
    assert "ack_seq:    2" in out.stdout
    assert "pending:    3" in out.stdout
    assert "room:1 offset=17 epoch=e1" in out.stdout


def test_journal_inspect_reports_errors(tmp_path: Path) -> None:
    out = run("journal", "inspect", os.fspath(tmp_path / "missing"))
    assert out.returncode == 1
    assert out.stderr.startswith("error:")
