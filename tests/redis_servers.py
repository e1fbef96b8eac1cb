"""Real Redis servers for tests: one instance (AOF, fsync on every write) and a 3-master Redis
Cluster, each on free loopback ports with a temporary directory, started when a test first asks
for them (session fixtures ``redis_server`` and ``redis_cluster``) and stopped after the run.

They need ``redis-server`` and ``redis-cli`` on PATH (Debian: ``apt-get install redis-server``;
``nox -s tests`` installs it); without them the fixtures fail, never skip. Never port 6379: a
system Redis may be there.

By hand (e.g. to poke at a store from a shell)::

    python -m tests.redis_servers            # one instance; prints its URL, Ctrl-C stops it
    python -m tests.redis_servers --cluster  # a 3-master cluster
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: How long a server gets to listen (or a cluster to agree on its slots) before the fixture fails.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the Redis store tests need a real Redis "
            "(`apt-get install redis-server`; `nox -s tests` installs it)"
        )
    return path


def redis_version() -> tuple[int, int]:
    """The (major, minor) version of the redis-server on PATH."""
    out = subprocess.run(
        [_tool("redis-server"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    version = out.split("v=", 1)[1].split()[0]
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, bus: bool = False) -> list[int]:
    """``count`` free loopback ports (and, with ``bus``, port + 10000 free too: a cluster node's
    bus), never 6379."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in found or port == 6379:
            continue
        if bus and (port + 10000 > 65535 or not _bindable(port + 10000)):
            continue
        found.append(port)
    return found


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait_for(what: str, ready: object, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``ready()`` until it is true (bounded by :data:`START_TIMEOUT`)."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():  # type: ignore[operator]
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: redis-server exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {START_TIMEOUT} s")
        time.sleep(0.02)


class RedisServer:
    """One ``redis-server`` on ``port`` with its data (AOF) in ``directory``."""

    def __init__(self, directory: Path, port: int, *extra: str) -> None:
        self.directory = directory
        self.port = port
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the process keeps it
        try:
            self.process = subprocess.Popen(
                [
                    _tool("redis-server"),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "no",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        _wait_for(f"redis-server on port {self.port}", lambda: _ping(self.port), self.process)

    def stop(self, *, kill: bool = False) -> None:
        """Stop it: SIGTERM (Redis writes its AOF out and exits), or SIGKILL with ``kill`` (a
        crash: only what was fsynced survives); SIGKILL anyway if SIGTERM takes too long."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def restart(self, *, kill: bool = False) -> None:
        """Stop it (see :meth:`stop`) and start it again on the same port and directory: it
        loads its AOF."""
        self.stop(kill=kill)
        self.start()


class RedisCluster:
    """A Redis Cluster of three masters (no replicas), each a :class:`RedisServer`."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node-{port}",
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            )
            for port in free_ports(3, bus=True)
        ]

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{nodes}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                _tool("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        for node in self.nodes:
            _wait_for(f"cluster node {node.port}", lambda node=node: self._ok(node.port))

    @staticmethod
    def _ok(port: int) -> bool:
        out = subprocess.run(
            [_tool("redis-cli"), "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=STOP_TIMEOUT,
        )
        return "cluster_state:ok" in out.stdout

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    (port,) = free_ports(1)
    server = RedisServer(directory, port)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_cluster(directory: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis (AOF, ``appendfsync always``) for the session; tests keep apart by key prefix."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster for the session."""
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


if __name__ == "__main__":
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        manager = running_cluster if "--cluster" in sys.argv[1:] else running_redis
        with manager(Path(tmp)) as running:
            print(running.url, "(pid", os.getpid(), "- Ctrl-C stops it)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
