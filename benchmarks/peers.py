"""The baselines' servers, each run in a process of its own (as our reference server is):

    python benchmarks/peers.py raw        # trio-websocket: counts messages, echoes pings
    python benchmarks/peers.py socketio   # python-socketio on aiohttp: acks, rooms, broadcast

Each prints ``listening PORT`` once it accepts connections, then serves until killed.

The raw server speaks text messages: ``end`` is answered with the number of other messages
received on that connection (so a fire-and-forget sender knows the server has read them all);
a message starting with ``ping`` is sent straight back.

The Socket.IO server answers ``msg`` with an ack (``True``) and counts it; ``join`` puts the
client in the ``bench`` room; ``publish`` broadcasts its payload to the room as ``msg``.
"""

from __future__ import annotations

import sys


def _announce(port: int) -> None:
    sys.stdout.write(f"listening {port}\n")
    sys.stdout.flush()


def raw() -> None:
    import trio
    from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        count = 0
        try:
            while True:
                message = await ws.get_message()
                if message == "end":
                    await ws.send_message(str(count))
                    count = 0
                elif message[:4] == "ping":
                    await ws.send_message(message)
                else:
                    count += 1
        except ConnectionClosed:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            _announce(server.port)

    trio.run(main)


def socketio_server() -> None:
    import socketio
    from aiohttp import web

    sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=16 * 1024 * 1024)
    app = web.Application()
    sio.attach(app)

    @sio.on("msg")  # type: ignore[misc]
    async def on_msg(sid: str, data: object) -> bool:
        return True

    @sio.on("join")  # type: ignore[misc]
    async def on_join(sid: str, data: object) -> bool:
        await sio.enter_room(sid, "bench")
        return True

    @sio.on("publish")  # type: ignore[misc]
    async def on_publish(sid: str, data: object) -> bool:
        await sio.emit("msg", data, room="bench")
        return True

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        _announce(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return runner

    import asyncio

    async def main() -> None:
        await start()
        await asyncio.Event().wait()

    asyncio.run(main())


if __name__ == "__main__":
    {"raw": raw, "socketio": socketio_server}[sys.argv[1]]()
