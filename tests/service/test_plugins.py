"""Plugins and handlers of a running service, against the reference server: the lifecycle
order, consuming plugins, a failing and a blocked plugin beside good ones, entry points, the
auth, heartbeat, storage, notification and error handlers, and the service tag on log records."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_realtime import Message, Metrics, open_realtime
from trio_realtime.server import AllowAll, Identity, RealtimeServer
from trio_realtime.service import (
    BasePlugin,
    DesktopNotifications,
    EventPlugin,
    FileStorage,
    Service,
    ServiceConfig,
    ServiceContext,
    ServiceFailed,
    ServiceHandlers,
    ServiceTagFilter,
    load_plugin,
    run_services,
)

from ..connection.conftest import running_server, url
from ..helpers import Watched

CHANNEL = "room:1"


class Recorder(BasePlugin):
    """Records every call, in order; ``seen(n)`` waits until it has ``n`` entries."""

    def __init__(self, name: str, consume: tuple[str, ...] = (), types: tuple[str, ...] = ()):
        self.name = name
        self.supported_message_types = types
        self.consume = consume
        self.calls: list[Any] = []
        self._changed = trio.Event()

    def _record(self, entry: Any) -> None:
        self.calls.append(entry)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[list[Any]], bool], what: str) -> None:
        with trio.fail_after(10):
            while not predicate(self.calls):
                await self._changed.wait()
        assert predicate(self.calls), what

    def events(self) -> list[str]:
        return [c[1] for c in self.calls if isinstance(c, tuple) and c[0] == "message"]

    async def initialize(self, context: ServiceContext) -> None:
        self.context = context
        self._record("initialize")
        await trio.lowlevel.checkpoint()

    async def handle_message(self, message: Message) -> bool:
        self._record(("message", message.event))
        await trio.lowlevel.checkpoint()
        return message.event in self.consume

    async def on_connection_changed(self, connected: bool) -> None:
        self._record(("connected", connected))
        await trio.lowlevel.checkpoint()

    async def on_service_started(self) -> None:
        self._record("started")
        await trio.lowlevel.checkpoint()

    async def on_service_stopped(self) -> None:
        self._record("stopped")
        await trio.lowlevel.checkpoint()

    async def dispose(self) -> None:
        self._record("dispose")
        await trio.lowlevel.checkpoint()


class Handled:
    """A message handler that records the events it got."""

    def __init__(self) -> None:
        self.events: Watched[str] = Watched()

    async def handle_message(self, message: Message) -> None:
        self.events.append(message.event)
        await trio.lowlevel.checkpoint()


class Errors:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def on_error(self, error: BaseException, where: str) -> None:
        self.seen.append((where, str(error)))
        await trio.lowlevel.checkpoint()


def config(tmp_path: Path, server: RealtimeServer, **kwargs: Any) -> ServiceConfig:
    kwargs.setdefault("channels", (CHANNEL,))
    return ServiceConfig(
        name="svc",
        url=url(server),
        token="svc",
        journal_dir=os.fspath(tmp_path / "svc"),
        **kwargs,
    )


class _Cancel(Exception):
    pass


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[trio.Event]:
    """Run ``service`` (started when this enters); leaving sets its stopping event (it stops
    in order), or cancels it if the block raised ``_Cancel``."""
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run, stopping)
        try:
            yield stopping
        except _Cancel:  # the block raised it: cancel the service instead of stopping it
            nursery.cancel_scope.cancel()
        else:
            stopping.set()


async def publish(server: RealtimeServer, tmp_path: Path, *events: str) -> None:
    """Send ``events`` to the channel from another client, and wait until they are stored."""
    async with open_realtime(url(server), journal_dir=tmp_path / "sender", token="bob") as conn:
        receipts = [await conn.send(CHANNEL, event, {"n": i}) for i, event in enumerate(events)]
        for receipt in receipts:
            await receipt.wait()


@pytest.mark.parametrize("stopped_by", ["stopping", "cancellation"])
async def test_lifecycle_hooks_come_in_the_documented_order_once_each(
    tmp_path: Path, stopped_by: str
) -> None:
    plugin = Recorder("order")
    async with running_server(tmp_path) as server:
        service = Service(config(tmp_path, server), plugins=[plugin])
        async with running(service):
            await plugin.wait_for(lambda c: ("connected", True) in c, "connected")
            await server.drop_connections()  # the link drops; the client resumes
            await plugin.wait_for(lambda c: c.count(("connected", True)) == 2, "reconnected")
            if stopped_by == "cancellation":
                raise _Cancel  # leaves the service's nursery: the service is cancelled
    assert plugin.calls == [
        "initialize",
        "started",
        ("connected", True),
        ("connected", False),
        ("connected", True),
        ("connected", False),  # the service stopping with the link up
        "stopped",
        "dispose",
    ]


async def test_a_consuming_plugin_hides_a_message_from_the_rest(tmp_path: Path) -> None:
    first = Recorder("gate", consume=("secret",))
    later = Recorder("later")
    only_chat = Recorder("chat-only", types=("chat_message",))
    handler = Handled()
    async with running_server(tmp_path) as server:
        service = Service(
            config(tmp_path, server),
            plugins=[first, later, only_chat],
            handlers=ServiceHandlers(message=handler),
        )
        async with running(service):
            await first.wait_for(lambda c: ("connected", True) in c, "connected")
            await publish(server, tmp_path, "chat_message", "secret", "chat_message", "other")
            await handler.events.wait_until(lambda: len(handler.events) == 3)  # the last step
    assert first.events() == ["chat_message", "secret", "chat_message", "other"]
    assert later.events() == ["chat_message", "chat_message", "other"]
    assert only_chat.events() == ["chat_message", "chat_message"]
    assert handler.events == ["chat_message", "chat_message", "other"]


class Raises(Recorder):
    async def handle_message(self, message: Message) -> bool:
        self._record(("message", message.event))
        raise RuntimeError(f"cannot handle {message.event}")


class Blocks(Recorder):
    async def handle_message(self, message: Message) -> bool:
        self._record(("message", message.event))
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_raising_and_a_blocking_plugin_stop_neither_the_others_nor_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raising = Raises("raising")
    blocking = Blocks("blocking")
    good = Recorder("good")
    handler = Handled()
    errors = Errors()
    async with running_server(tmp_path) as server:
        service = Service(
            config(
                tmp_path,
                server,
                plugin_max_restarts=1,
                plugin_timeout=0.2,
                plugin_inbox_size=2,
                stop_timeout=0.5,
            ),
            plugins=[raising, blocking, good],
            handlers=ServiceHandlers(message=handler, error=errors),
        )
        async with running(service):
            await good.wait_for(lambda c: ("connected", True) in c, "connected")
            events = [f"e{i}" for i in range(6)]
            await publish(server, tmp_path, *events)
            await good.wait_for(lambda c: good.events() == events, "every event")
            # The connection still works both ways: the service's own send is stored.
            receipt = await raising.context.send(CHANNEL, "still", {"ok": True})
            with trio.fail_after(10):
                await receipt.wait()
            await handler.events.wait_until(lambda: "still" in handler.events)
    assert handler.events == [*events, "still"]
    # Restarted once (initialize again), then disabled and disposed after its second failure.
    assert raising.events() == ["e0", "e1"]
    assert raising.calls.count("initialize") == 2
    assert raising.calls[-1] == "dispose"
    assert [where for where, _ in errors.seen] == ["plugin raising", "plugin raising"]
    # The blocked one got its first event, two more wait in its inbox, the rest it missed.
    assert blocking.events() == ["e0"]
    assert (
        "plugin blocking has 2 messages waiting: it misses those from room:1 #4 on" in caplog.text
    )
    # Waited for once: then passed by without waiting until it catches up (it never does).
    assert caplog.text.count("plugin blocking did not answer within 0.2 s") == 1


def write_plugin_package(root: Path, *, name: str = "tr_demo_plugin") -> None:
    """A package installed into ``root`` the way pip leaves one: a module and a dist-info
    with an entry point in the group ``trio_realtime.plugins``."""
    (root / f"{name}.py").write_text(
        "from trio_realtime.service import EventPlugin\n"
        "\n"
        "def make():\n"
        "    plugin = EventPlugin('demo')\n"
        "    plugin.seen = []\n"
        "\n"
        "    @plugin.on('ping')\n"
        "    async def ping(message):\n"
        "        plugin.seen.append(message.offset)\n"
        "        return True\n"
        "\n"
        "    return plugin\n"
    )
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[trio_realtime.plugins]\ndemo = {name}:make\n")


async def test_a_plugin_is_found_through_an_entry_point_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    write_plugin_package(site)
    monkeypatch.syspath_prepend(os.fspath(site))
    plugin = load_plugin("demo")
    assert isinstance(plugin, EventPlugin)
    assert plugin.supported_message_types == ("ping",)
    handler = Handled()
    async with running_server(tmp_path) as server:
        service = Service(
            config(tmp_path, server, plugins=("demo",)), handlers=ServiceHandlers(message=handler)
        )
        (loaded,) = service.all_plugins()
        assert loaded.name == "demo"
        watcher = Recorder("watcher")
        service.plugins = [watcher]
        async with running(service):
            await watcher.wait_for(lambda c: ("connected", True) in c, "connected")
            await publish(server, tmp_path, "ping", "pong")
            await handler.events.wait_until(lambda: "pong" in handler.events)
    assert handler.events == ["pong"]  # ping consumed by the entry point's plugin


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nothing-by-that-name", "no plugin 'nothing-by-that-name' in the entry point group"),
        ("os:sep", "is not a plugin"),
        ("os.path:join", "making plugin .os.path:join. failed"),
        ("no_such_module_x:thing", "cannot load plugin"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_is_a_config_error(name: str, message: str) -> None:
    from trio_realtime import ConfigError

    with pytest.raises(ConfigError, match=message) as info:
        load_plugin(name)
    assert info.value.option == "plugins"


class TokenAuth:
    def __init__(self, token: str) -> None:
        self.requires_auth = True
        self.token = token
        self.calls: Watched[str] = Watched()

    async def get_auth_data(self) -> str:
        self.calls.append("get")
        await trio.lowlevel.checkpoint()
        return self.token

    async def on_auth_success(self) -> None:
        self.calls.append("success")
        await trio.lowlevel.checkpoint()

    async def on_auth_failure(self, error: str) -> None:
        self.calls.append("failure")
        await trio.lowlevel.checkpoint()


class Refuses(AllowAll):
    async def authenticate(self, token: str | None) -> Identity | None:
        await trio.lowlevel.checkpoint()
        return None if token == "bad" else Identity(token or "anonymous")


async def test_auth_hooks_and_a_refused_service_leaves_the_others_running(
    tmp_path: Path,
) -> None:
    good_auth, bad_auth = TokenAuth("carol"), TokenAuth("bad")
    good, bad_errors = Recorder("good"), Errors()
    async with running_server(tmp_path, auth=Refuses()) as server:
        base = config(tmp_path, server)
        services = [
            Service(
                ServiceConfig(name="ok", url=base.url, journal_dir=os.fspath(tmp_path / "ok")),
                plugins=[good],
                handlers=ServiceHandlers(auth=good_auth),
            ),
            Service(
                ServiceConfig(
                    name="refused", url=base.url, journal_dir=os.fspath(tmp_path / "refused")
                ),
                handlers=ServiceHandlers(auth=bad_auth, error=bad_errors),
            ),
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_services, services)
            await good.wait_for(lambda c: ("connected", True) in c, "connected")
            await bad_auth.calls.wait_until(lambda: "failure" in bad_auth.calls)
            await server.drop_connections()  # the good one is still running: it comes back
            await good.wait_for(lambda c: c.count(("connected", True)) == 2, "reconnected")
            nursery.cancel_scope.cancel()
        # Alone, once it stopped, its failure is what run_services raises.
        with pytest.raises(ServiceFailed) as info:
            await run_services([services[1]])
    assert info.value.name == "refused"
    assert good_auth.calls[:2] == ["get", "success"]
    assert good_auth.calls.count("success") == 2
    assert bad_auth.calls[-1] == "failure"
    assert [where for where, _ in bad_errors.seen] == ["auth", "auth"]


async def test_heartbeat_storage_and_desktop_notifications(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A notify-send that writes its arguments to a file.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "notified.txt"
    script = bin_dir / "notify-send"
    script.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {log}\necho >> {log}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    notified = trio.Event()
    run_notify_send = DesktopNotifications.notify

    async def notify(self: DesktopNotifications, title: str, body: str) -> None:
        await run_notify_send(self, title, body)  # notify-send has run (and exited) when it returns
        if "chat_message" in body:
            notified.set()

    monkeypatch.setattr(DesktopNotifications, "notify", notify)  # the default handler's, watched
    beats: list[Metrics] = []
    beat = trio.Event()

    class Beats:
        async def on_heartbeat(self, metrics: Metrics) -> None:
            beats.append(metrics)
            beat.set()
            await trio.lowlevel.checkpoint()

    watcher = Recorder("watcher")
    async with running_server(tmp_path) as server:
        service = Service(
            config(tmp_path, server, notifications=True, heartbeat_interval=0.05, tag="alerts"),
            plugins=[watcher],
            handlers=ServiceHandlers(heartbeat=Beats()),
        )
        async with running(service):
            await watcher.wait_for(lambda c: ("connected", True) in c, "connected")
            with trio.fail_after(10):
                await beat.wait()
            await publish(server, tmp_path, "chat_message")
            await watcher.wait_for(lambda c: watcher.events() == ["chat_message"], "message")
            with trio.fail_after(10):
                await notified.wait()
    assert beats[0].state == "connected"
    assert "--app-name|alerts|alerts: room:1|chat_message: {'n': 0}|" in log.read_text()
    info = json.loads((tmp_path / "svc" / "service-info.json").read_text())
    assert info["url"] == url(server)
    assert info["last_connected"].startswith("20")


async def test_desktop_notifications_fall_back_to_a_log_record(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", "")
    caplog.set_level(logging.INFO, "trio_realtime.service")
    await DesktopNotifications().notify("title", "body")
    assert "notification: title: body" in caplog.text


async def test_the_service_tag_is_on_the_connections_own_log_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(ServiceTagFilter())
    watcher = Recorder("watcher")
    async with running_server(tmp_path) as server:
        service = Service(config(tmp_path, server, tag="billing"), plugins=[watcher])
        async with running(service):
            await watcher.wait_for(lambda c: ("connected", True) in c, "connected")
    tags = {(r.name, getattr(r, "service", None)) for r in caplog.records}
    connection = {tag for name, tag in tags if name == "trio_realtime"}
    assert connection == {"billing"}, tags
    assert ("trio_realtime.service", "billing") in tags


def test_event_plugin_decorators_need_async_functions() -> None:
    plugin = EventPlugin("x")
    with pytest.raises(TypeError):
        plugin.on("a")(lambda message: True)  # type: ignore[arg-type,return-value]
    assert plugin.supported_message_types == ()


async def test_file_storage_keeps_values_and_rewrites_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "info" / "service-info.json"
    storage = FileStorage(path)
    await storage.store("url", "ws://a")
    first = path.stat().st_ino
    await storage.store("url", "ws://a")  # unchanged: the file is not replaced
    assert path.stat().st_ino == first
    await storage.store("url", "ws://b")
    assert path.stat().st_ino != first
    assert await FileStorage(path).get("url") == "ws://b"  # read back by another object
    await storage.clear()
    assert await FileStorage(path).get("url") is None
