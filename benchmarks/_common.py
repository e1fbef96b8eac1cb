"""Shared by the benchmarks: peer processes and the machine's description."""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import NamedTuple

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


def free_port() -> int:
    """A free loopback port, never 6379 (a system Redis may be there)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess(NamedTuple):
    port: int
    pid: int


@contextmanager
def redis_server(directory: str, appendfsync: str = "always") -> Iterator[RedisProcess]:
    """Run a ``redis-server`` for the block (as tests/redis_servers.py does): a free loopback port,
    its AOF in ``directory`` (``--appendonly yes --appendfsync APPENDFSYNC``, no RDB snapshots).
    Stopped with SIGTERM (SIGKILL after 10 s) on the way out."""
    path = shutil.which("redis-server")
    if path is None:
        raise SystemExit("`redis-server` is not on PATH (`apt-get install redis-server`)")
    os.makedirs(directory, exist_ok=True)
    port = free_port()
    with open(os.path.join(directory, "redis.log"), "ab") as log:
        process = subprocess.Popen(
            [
                path,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                directory,
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 20
        while not _redis_ping(port):
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not answer within 20 s")
            time.sleep(0.02)
        yield RedisProcess(port, process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split("v=", 1)[1].split()[0]


def node_versions() -> dict[str, str]:
    """The versions of Node and of the socket.io package the Node server runs on."""
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    package = ROOT / "examples" / "node_modules" / "socket.io" / "package.json"
    return {
        "node": node.stdout.strip(),
        "socket.io": json.loads(package.read_text())["version"],
    }
