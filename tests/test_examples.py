"""Every script in examples/ runs to completion (but the servers, which run until stopped)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Servers that run until they are stopped, and clients of them; tests/socketio starts the
# servers, runs the clients against them and stops them.
SERVERS = {"socketio_server.py", "socketio_client.py"}
EXAMPLES = sorted(
    p for p in (Path(__file__).parent.parent / "examples").glob("*.py") if p.name not in SERVERS
)


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path) -> None:
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout
