"""Shared by the benchmarks: peer processes and the machine's description."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docs" / "benchmarks"
PEERS = Path(__file__).resolve().parent / "peers.py"


def machine() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


@asynccontextmanager
async def peer_process(kind: str) -> AsyncIterator[int]:
    """Run ``benchmarks/peers.py KIND`` for the block; yields the port it listens on."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(PEERS), kind], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while b"\n" not in output:
                chunk = await process.stdout.receive_some(1024)
                if not chunk:
                    raise RuntimeError(f"the {kind} peer exited: {output!r}")
                output += chunk
        word, port = output.split(b"\n", 1)[0].split()
        assert word == b"listening", output
        yield int(port)
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
