"""A python-socketio 5 server to test a Socket.IO client transport against (see SOCKETIO.md).

    python examples/socketio_server.py [--port N] [--token T] [--log FILE]
                                       [--ping-interval MS] [--ping-timeout MS]

The same server as examples/socketio_server.js, served by aiohttp, except that python-socketio
has no connection state recovery: this is the server WITHOUT recovery (no "pid" in the CONNECT
answer, no offsets on broadcasts; a reconnect is a new session with a new sid).

Prints exactly one line, ``listening on <port>``, once it accepts connections (--port 0: the port
the OS picked), then serves on 127.0.0.1 until SIGTERM or SIGINT. Namespaces "/" and "/chat"
behave the same:

* --token T: a connection whose auth is not {"token": T} is refused ("unauthorized").
* An event with an ack: one JSON line is appended to the --log file before the ack (written and
  flushed to the OS at once, so a SIGKILL right after the ack cannot lose it)::

      {"ns", "event", "args", "key": args[0]["idempotency_key"] or null, "duplicate"}

  bytes anywhere in args are logged as {"_binary_base64": "..."}. A key is a duplicate when this
  process saw it before (in any namespace) or it is in the log file at startup. The ack is
  {"ok": true, "duplicate": <bool>}; a first occurrence is then broadcast to the whole namespace,
  the sender included. An event without an ack is broadcast, not logged.
* "__emit" {"event", "args", "count"}: the namespace is sent ``event`` count times (default 1),
  with args (default []) followed by {"i": k}, k = 0..count-1; then the ack {"ok": true}.
* "__drop": the ack {"ok": true}, then, once it is written, the socket's TCP connection is closed
  without a WebSocket close frame (on HTTP long-polling, Engine.IO's close instead).

Control events are neither logged nor broadcast. Events are handled one at a time, in the order
they arrive (``async_handlers=False``), so the log is in arrival order.

--ping-interval and --ping-timeout are in milliseconds as on the Node server, but python-engineio
announces them rounded down to whole seconds: use multiples of 1000.

Needs python-socketio and aiohttp (the test extras: ``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

try:
    import socketio  # type: ignore[import-untyped]
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"{exc}: this server needs python-socketio and aiohttp (pip install -e '.[test]')")

NAMESPACES = ("/", "/chat")

# Whether the event being handled asked for an ack: python-socketio does not tell its handlers.
_ACK_REQUESTED: contextvars.ContextVar[bool] = contextvars.ContextVar("ack", default=False)


class _Server(socketio.AsyncServer):  # type: ignore[misc]
    # python-socketio (5.x) calls _handle_event(eio_sid, namespace, id, data) for each event and
    # awaits the handler in it (async_handlers=False); id is None when the client wants no ack.
    async def _handle_event(self, eio_sid: str, namespace: str, id: Any, data: Any) -> None:
        token = _ACK_REQUESTED.set(id is not None)
        try:
            await super()._handle_event(eio_sid, namespace, id, data)
        finally:
            _ACK_REQUESTED.reset(token)


def _keys_in_log(path: Path) -> set[Any]:
    """The keys already in the log: a restarted server still flags them (a torn line is skipped)."""
    keys: set[str] = set()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return keys
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("key") is not None:
            keys.add(_hashable(entry["key"]))
    return keys


def _hashable(key: Any) -> str:
    return json.dumps(key, sort_keys=True)


def _loggable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"_binary_base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_loggable(v) for v in value]
    if isinstance(value, dict):
        return {k: _loggable(v) for k, v in value.items()}
    return value


def _append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


class InteropServer:
    """The python-socketio server and its state (the keys seen, the broadcasts in order)."""

    def __init__(
        self, token: str | None, log: Path | None, ping_interval: float, ping_timeout: float
    ) -> None:
        self.token = token
        self.log = log
        self.sio = _Server(
            async_mode="aiohttp",
            async_handlers=False,  # one event at a time per client, in arrival order
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_http_buffer_size=16 * 1024 * 1024,
        )
        self.seen = _keys_in_log(log) if log is not None else set()
        # Every broadcast goes through this queue, so they go out in the order they were asked for,
        # and after the ack that answers the event being broadcast (as on the Node server).
        self.broadcasts: asyncio.Queue[
            tuple[str, str, tuple[Any, ...], asyncio.Future[None] | None]
        ]
        self.broadcasts = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        for ns in NAMESPACES:
            self.sio.on("connect", namespace=ns)(self.on_connect)
            self.sio.on("*", namespace=ns)(self._catch_all(ns))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def broadcaster(self) -> None:
        while True:
            ns, event, args, done = await self.broadcasts.get()
            try:
                await self.sio.emit(event, args, namespace=ns)
            except Exception as exc:  # e.g. a reserved event name
                sys.stderr.write(f"cannot broadcast {event!r}: {exc!r}\n")
            if done is not None:
                done.set_result(None)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        if self.token is not None and not (
            isinstance(auth, dict) and auth.get("token") == self.token
        ):
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")

    def record(self, ns: str, event: str, args: list[Any]) -> bool:
        first = args[0] if args else None
        key = first.get("idempotency_key") if isinstance(first, dict) else None
        duplicate = key is not None and _hashable(key) in self.seen
        if key is not None:
            self.seen.add(_hashable(key))
        if self.log is not None:
            entry = {
                "ns": ns,
                "event": event,
                "args": _loggable(args),
                "key": key,
                "duplicate": duplicate,
            }
            _append_line(self.log, json.dumps(entry, separators=(",", ":")))
        return duplicate

    async def drop_link(self, sid: str, ns: str) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, ns)
        eio_socket = self.sio.eio.sockets.get(eio_sid)
        if eio_socket is None:
            return
        # The handler has returned and its ack is queued: wait until the writer took it (it writes
        # it to the TCP transport in the same step).
        await eio_socket.queue.join()
        request = self.sio.get_environ(sid, ns).get("aiohttp.request")
        upgraded = request is not None and request.headers.get("Upgrade", "").lower() == "websocket"
        if upgraded and request.transport is not None:
            request.transport.close()  # flushes what is buffered, then FIN: no close frame
        else:
            await self.sio.eio.disconnect(eio_sid)

    def _catch_all(self, ns: str) -> Any:
        async def on_event(event: str, sid: str, *args: Any) -> Any:
            return await self.on_event(ns, event, sid, args)

        return on_event

    async def on_event(self, ns: str, event: str, sid: str, args: tuple[Any, ...]) -> Any:
        if event == "__emit":
            spec = args[0] if args and isinstance(args[0], dict) else {}
            extra: list[Any] = spec["args"] if isinstance(spec.get("args"), list) else []
            count = spec.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                count = 1
            done: asyncio.Future[None] | None = None
            for k in range(count):
                done = asyncio.get_running_loop().create_future() if k == count - 1 else None
                self.broadcasts.put_nowait((ns, str(spec.get("event")), (*extra, {"i": k}), done))
            if done is not None:
                await done  # the ack once they are all sent
            return {"ok": True}
        if event == "__drop":
            self.spawn(self.drop_link(sid, ns))
            return {"ok": True}
        if not _ACK_REQUESTED.get():
            self.broadcasts.put_nowait((ns, event, args, None))
            return None
        duplicate = self.record(ns, event, list(args))
        if not duplicate:
            self.broadcasts.put_nowait((ns, event, args, None))
        return {"ok": True, "duplicate": duplicate}


async def serve(args: argparse.Namespace) -> None:
    server = InteropServer(
        args.token,
        Path(args.log) if args.log else None,
        args.ping_interval / 1000,
        args.ping_timeout / 1000,
    )
    server.spawn(server.broadcaster())
    app = web.Application()
    server.sio.attach(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    try:
        await site.start()
    except OSError as exc:
        sys.stderr.write(f"cannot listen on port {args.port}: {exc}\n")
        os._exit(1)
    port = runner.addresses[0][1]
    sys.stdout.write(f"listening on {port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    # Exit at once, as the Node server does: no goodbye to the clients.
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=3000, help="0: the OS picks (default 3000)")
    parser.add_argument("--token", help="refuse connections whose auth is not {'token': TOKEN}")
    parser.add_argument("--log", help="append one JSON line per acked event to this file")
    parser.add_argument("--ping-interval", type=int, default=25000, metavar="MS")
    parser.add_argument("--ping-timeout", type=int, default=20000, metavar="MS")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
