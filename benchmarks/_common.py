"""Shared by the benchmarks: peer processes and the machine's description."""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docs" / "benchmarks"
PEERS = Path(__file__).resolve().parent / "peers.py"
NODE_SOCKETIO_SERVER = ROOT / "examples" / "socketio_server.js"


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


@contextmanager
def node_socketio_server(*args: str) -> Iterator[int]:
    """Run the Node socket.io server of ``examples/socketio_server.js`` (``--port 0`` and
    ``args``) for the block; yields the port it listens on (from its ``listening on`` line)."""
    if shutil.which("node") is None:
        raise SystemExit("`node` is not on PATH: this benchmark needs Node >= 18")
    if not (ROOT / "examples" / "node_modules" / "socket.io").is_dir():
        raise SystemExit("socket.io is not installed: run `npm ci --prefix examples` first")
    process = subprocess.Popen(
        ["node", str(NODE_SOCKETIO_SERVER), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
                raise RuntimeError("the Node socket.io server did not start within 30 s")
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                raise RuntimeError(f"the Node socket.io server exited: {line!r}")
            line += chunk
        words = line.split()
        if words[:2] != [b"listening", b"on"]:
            raise RuntimeError(f"unexpected first line from the Node server: {line!r}")
        yield int(words[2])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def node_versions() -> dict[str, str]:
    """The versions of Node and of the socket.io package the Node server runs on."""
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    package = ROOT / "examples" / "node_modules" / "socket.io" / "package.json"
    return {
        "node": node.stdout.strip(),
        "socket.io": json.loads(package.read_text())["version"],
    }
