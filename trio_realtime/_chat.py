"""The example chat (``trio-realtime chat``) and the self-checking demo (``trio-realtime demo``)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import trio

from ._config import RealtimeConfig
from ._paths import safe_name
from ._protocol import Gap, Message, PresenceStatus
from ._realtime import Connection, open_realtime
from .server import RealtimeServer, load_or_create_secret, make_token, serve

__all__ = ["chat", "chat_journal_dir", "demo", "demo_sender"]

Out = Callable[[str], None]


def chat_journal_dir(data_dir: str, name: str) -> str:
    """The journal of user ``name``'s chat: ``DATA/chat/<safe_name(name)>``. A journal that an
    older version kept under the raw name (when that differs but was a plain file name) is kept
    on while the new place does not exist."""
    path = os.path.join(data_dir, "chat", safe_name(name))
    old = os.path.join(data_dir, "chat", name)
    plain = name not in ("", ".", "..") and os.sep not in name and "/" not in name
    if plain and old != path and os.path.isdir(old) and not os.path.exists(path):
        return old
    return path


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "wss" else 80)


async def _listening(host: str, port: int) -> bool:
    with trio.move_on_after(2):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
        await stream.aclose()
        return True
    return False


def _show(item: Message | Gap) -> str:
    if isinstance(item, Gap):
        last = item.last_missing if item.last_missing is not None else "?"
        return f"* messages {item.first_missing}..{last} of {item.channel} are no longer available"
    text = item.payload.get("text") if isinstance(item.payload, dict) else item.payload
    return f"[{item.channel} #{item.offset}] {item.sender}: {text}"


async def chat(
    *,
    name: str,
    url: str,
    room: str,
    data_dir: str,
    token: str | None = None,
    lines: Callable[[], object] | None = None,
    out: Out = print,
) -> None:
    """Line-based chat: each line read is sent to ``room``; every message of the room is shown
    once. Starts an embedded server if nothing listens at ``url``."""
    host, port = _host_port(url)
    server_dir = os.path.join(data_dir, "server")
    async with trio.open_nursery() as nursery:
        if not await _listening(host, port):
            await nursery.start(functools.partial(serve, server_dir, host=host, port=port))
            out(f"* nothing listened at {url}: started an embedded server (data in {server_dir})")
        if token is None:
            secret = await trio.to_thread.run_sync(load_or_create_secret, server_dir)
            token = make_token(secret, name)
        journal = chat_journal_dir(data_dir, name)
        async with open_realtime(url, journal_dir=journal, token=token) as conn:
            nursery.start_soon(_show_states, conn, out)
            await conn.subscribe(room)
            nursery.start_soon(_show_messages, conn, room, name, out)
            nursery.start_soon(_show_presence, conn, room, out)
            nursery.start_soon(_show_typing, conn, room, out)
            nursery.start_soon(_show_receipts, conn, room, name, out)
            await conn.presence.update(PresenceStatus.ONLINE, channel=room, metadata={"name": name})
            out(f"* commands: {', '.join(_COMMANDS)}; any other line is a message")
            stdin = trio.wrap_file(sys.stdin)
            while True:
                line = await stdin.readline()
                if not line:
                    break
                text = line.rstrip("\n")
                if text in _COMMANDS:
                    await _command(conn, room, text, out)
                elif text:
                    await conn.send(room, "chat_message", {"text": text})
                    out(f"* sent (pending: {conn.pending_count})")
        nursery.cancel_scope.cancel()


_COMMANDS = ("/typing", "/away", "/busy", "/online", "/who")


async def _command(conn: Connection, room: str, text: str, out: Out) -> None:
    if text == "/typing":
        await conn.typing.set(room, True)
    elif text == "/who":
        members = conn.presence.members(room)
        out(
            "* here: "
            + (", ".join(f"{u} ({m.status.value})" for u, m in members.items()) or "nobody")
        )
    else:
        await conn.presence.update(PresenceStatus(text[1:]), channel=room)


async def _show_states(conn: Connection, out: Out) -> None:
    async for state in conn.states():
        out(f"* {state.value} (pending: {conn.pending_count})")


async def _show_messages(conn: Connection, room: str, name: str, out: Out) -> None:
    async for item in conn.messages(room):
        out(_show(item))
        if isinstance(item, Message) and item.sender != name:
            await conn.receipts.mark_read(room, item.offset)  # shown is read


async def _show_presence(conn: Connection, room: str, out: Out) -> None:
    async for change in conn.presence.changes(room):
        for user, member in change.joins.items():
            out(f"* {user} is {member.status.value}")
        for user in change.leaves:
            out(f"* {user} left")


async def _show_typing(conn: Connection, room: str, out: Out) -> None:
    async for users in conn.typing.changes(room):
        if users:
            out(f"* {', '.join(sorted(users))} typing...")


async def _show_receipts(conn: Connection, room: str, name: str, out: Out) -> None:
    async for receipt in conn.receipts.changes(room):
        if receipt.user != name:
            out(f"* read by {receipt.user} up to #{receipt.offset}")


async def demo_sender(url: str, journal_dir: str, token: str, total: int, report: int) -> None:
    """The demo's client process: sends ``{"n": i}`` for i up to ``total`` - 1, continuing where
    its journal says it stopped; writes each seq whose send returned to file descriptor ``report``."""
    config = RealtimeConfig(initial_retry_delay=0.05, max_retry_delay=0.5, close_grace_period=30)
    async with open_realtime(url, journal_dir=journal_dir, token=token, config=config) as conn:
        for n in range(conn.last_seq, total):
            receipt = await conn.send("demo", "count", {"n": n, "from": "bob"})
            os.write(report, f"{receipt.seq}\n".encode())
            await trio.sleep(0.01)  # paced, so the demo can kill it midway
        await conn.drain()


async def demo(*, out: Out = print, total: int = 400) -> bool:
    """Two clients, a server restart and a client SIGKILL; prints a summary; True if nothing was
    lost or duplicated."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trio-realtime-demo-") as tmp:
        server_dir = os.path.join(tmp, "server")
        secret = load_or_create_secret(server_dir)
        config = RealtimeConfig(
            initial_retry_delay=0.05, max_retry_delay=0.5, close_grace_period=10
        )
        async with trio.open_nursery() as nursery:
            server_scopes: list[trio.CancelScope] = []
            server_stopped: list[trio.Event] = []

            async def run_server(
                port: int, *, task_status: trio.TaskStatus[RealtimeServer]
            ) -> None:
                scope = trio.CancelScope()
                stopped = trio.Event()
                server_scopes.append(scope)
                server_stopped.append(stopped)
                try:
                    with scope:
                        await serve(server_dir, port=port, task_status=task_status)
                finally:
                    stopped.set()

            port = (await nursery.start(run_server, 0)).port
            url = f"ws://127.0.0.1:{port}/realtime"
            out(f"* server listening on {url} (SQLite in {server_dir})")
            received: list[Message] = []
            gaps: list[Gap] = []
            all_in = trio.Event()
            async with open_realtime(
                url,
                journal_dir=os.path.join(tmp, "alice"),
                token=make_token(secret, "alice"),
                config=config,
            ) as alice:
                await alice.subscribe("demo")

                async def watch() -> None:
                    async for item in alice.messages("demo"):
                        if isinstance(item, Gap):
                            gaps.append(item)
                        else:
                            received.append(item)
                        if len(received) >= total + 100:
                            all_in.set()

                nursery.start_soon(watch)
                bob_dir = os.path.join(tmp, "bob")
                token = make_token(secret, "bob")

                procs: list[subprocess.Popen[bytes]] = []

                def start_bob() -> tuple[subprocess.Popen[bytes], int]:
                    read_fd, write_fd = os.pipe()
                    proc = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "trio_realtime",
                            "_demo-sender",
                            url,
                            bob_dir,
                            token,
                            str(total),
                            str(write_fd),
                        ],
                        pass_fds=[write_fd],
                    )
                    procs.append(proc)
                    os.close(write_fd)
                    return proc, read_fd

                returned: set[int] = set()

                async def read_reports(fd: int) -> None:
                    stream = trio.lowlevel.FdStream(fd)
                    buffer = b""
                    async for chunk in stream:
                        buffer += chunk
                        *done, buffer = buffer.split(b"\n")
                        returned.update(int(x) for x in done if x)

                bob, fd = start_bob()
                nursery.start_soon(read_reports, fd)
                out("* bob (a separate process) is sending; alice sends too")
                try:
                    for i in range(100):
                        await alice.send("demo", "count", {"n": i, "from": "alice"})
                        if i == 30:
                            server_scopes[-1].cancel()
                            out("* server stopped (alice and bob keep sending into their journals)")
                        if i == 50:
                            await server_stopped[-1].wait()  # its port is free again
                            await nursery.start(run_server, port)
                            out("* server restarted on the same port with the same data")
                        if i == 70:
                            bob.send_signal(signal.SIGKILL)
                            await trio.to_thread.run_sync(bob.wait)
                            out(
                                f"* bob SIGKILLed after {len(returned)} sends returned; restarting it"
                            )
                            bob, fd = start_bob()
                            nursery.start_soon(read_reports, fd)
                        await trio.sleep(0.01)
                    with trio.fail_after(120):
                        code = await trio.to_thread.run_sync(bob.wait, abandon_on_cancel=True)
                    await alice.drain()
                    with trio.move_on_after(30):
                        await all_in.wait()
                    reconnects = alice.total_reconnects
                finally:
                    for proc in procs:  # never leave a child behind, whatever happened
                        if proc.poll() is None:
                            proc.kill()
            nursery.cancel_scope.cancel()
    from_bob = [m.payload["n"] for m in received if m.payload.get("from") == "bob"]
    from_alice = [m.payload["n"] for m in received if m.payload.get("from") == "alice"]
    offsets = [m.offset for m in received]
    ok = (
        code == 0
        and from_bob == list(range(total))
        and from_alice == list(range(100))
        and offsets == list(range(1, len(offsets) + 1))
        and not gaps
    )
    lost = total - len(set(from_bob)) + 100 - len(set(from_alice))
    duplicated = len(from_bob) - len(set(from_bob)) + len(from_alice) - len(set(from_alice))
    out("")
    out(f"sent:        bob {total} (in two processes, one SIGKILLed), alice 100")
    out(
        f"received:    {len(received)} messages by alice, offsets 1..{offsets[-1] if offsets else 0}"
    )
    out(f"lost:        {lost}")
    out(f"duplicated:  {duplicated}")
    out(f"in order:    {from_bob == sorted(from_bob) and from_alice == sorted(from_alice)}")
    out(f"gaps:        {len(gaps)}; alice reconnected {reconnects} times")
    out(
        f"result:      {'OK: nothing lost, nothing duplicated' if ok else 'FAILED'} ({time.monotonic() - started:.1f} s)"
    )
    return ok
