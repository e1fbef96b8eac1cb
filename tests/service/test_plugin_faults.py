"""Plugins and handlers that misbehave: one that fails to initialize, one whose hook raises, one
that is slow, one stuck while the link flaps, and handlers that hang at stop. None of them holds
up the others, and stopping stays bounded."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
import trio

from trio_realtime import Message
from trio_realtime.service import Service, ServiceContext, ServiceHandlers, run_services

from ..connection.conftest import running_server
from .test_plugins import Handled, Recorder, config, publish, running


class FailsToInitialize(Recorder):
    async def initialize(self, context: ServiceContext) -> None:
        self._record("initialize")
        raise RuntimeError("no database")


async def test_a_plugin_that_fails_to_initialize_is_never_called_again(tmp_path: Path) -> None:
    broken, good = FailsToInitialize("broken"), Recorder("good")
    async with running_server(tmp_path) as server:
        service = Service(config(tmp_path, server), plugins=[broken, good])
        async with running(service):
            await good.wait_for(lambda c: ("connected", True) in c, "connected")
            await publish(server, tmp_path, "a")
            await good.wait_for(lambda c: good.events() == ["a"], "a")
    assert broken.calls == ["initialize"]  # no hook, no message, no dispose
    assert good.calls[-2:] == ["stopped", "dispose"]


class StartFails(Recorder):
    async def on_service_started(self) -> None:
        self._record("started")
        if self.calls.count("started") == 1:
            raise RuntimeError("first start fails")


async def test_a_restart_is_a_new_life_with_every_hook_again(tmp_path: Path) -> None:
    plugin = StartFails("restarted")
    async with running_server(tmp_path) as server:
        service = Service(config(tmp_path, server, plugin_max_restarts=1), plugins=[plugin])
        async with running(service):
            await plugin.wait_for(lambda c: ("connected", True) in c, "connected")
    assert plugin.calls == [
        "initialize",
        "started",  # raised: disposed, initialized and started again
        "dispose",
        "initialize",
        "started",
        ("connected", True),
        ("connected", False),
        "stopped",
        "dispose",
    ]


class WithGate(Recorder):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = trio.Event()


class Gated(WithGate):
    """Handles each message only once its gate opens."""

    async def handle_message(self, message: Message) -> bool:
        await self.gate.wait()
        return await super().handle_message(message)


async def test_a_slow_plugin_is_waited_for_once_then_passed_by_until_it_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slow, later, handler = Gated("slow"), Recorder("later"), Handled()
    async with running_server(tmp_path) as server:
        service = Service(
            config(tmp_path, server, plugin_timeout=0.2),
            plugins=[slow, later],
            handlers=ServiceHandlers(message=handler),
        )
        async with running(service):
            await later.wait_for(lambda c: ("connected", True) in c, "connected")
            events = [f"e{i}" for i in range(8)]
            await publish(server, tmp_path, *events)
            await handler.events.wait_until(lambda: handler.events == events)
            assert slow.events() == []  # it has handled none yet
            slow.gate.set()
            await slow.wait_for(lambda c: slow.events() == events, "caught up")
            await publish(server, tmp_path, "after")
            await handler.events.wait_until(lambda: "after" in handler.events)
    assert later.events() == [*events, "after"]
    assert slow.events() == [*events, "after"]  # nothing missed: its inbox held them
    # One wait of 0.2 s in all (without the pass-by, one per event).
    assert caplog.text.count("plugin slow did not answer within 0.2 s") == 1
    assert "plugin slow caught up" in caplog.text


class StuckOnChange(WithGate):
    """Stuck in its first connection change until its gate opens."""

    async def on_connection_changed(self, connected: bool) -> None:
        await super().on_connection_changed(connected)
        await self.gate.wait()


async def test_a_plugin_stuck_while_the_link_flaps_holds_no_growing_backlog(
    tmp_path: Path,
) -> None:
    stuck, watcher = StuckOnChange("stuck"), Recorder("watcher")
    async with running_server(tmp_path) as server:
        service = Service(config(tmp_path, server), plugins=[stuck, watcher])
        async with running(service):
            for flap in range(1, 6):
                await watcher.wait_for(lambda c, n=flap: c.count(("connected", True)) == n, "up")
                await server.drop_connections()
            await watcher.wait_for(lambda c: c.count(("connected", True)) == 6, "up again")
            assert len(service._runners[0]._inbox) <= 2  # each down/up pair cancelled out
            stuck.gate.set()
    # It saw the first change, then (as the pairs it never saw cancelled out) the last state.
    assert stuck.calls == [
        "initialize",
        "started",
        ("connected", True),
        ("connected", False),
        "stopped",
        "dispose",
    ]
    assert watcher.calls.count(("connected", False)) == 6


class HangsAtStop:
    async def on_service_started(self, name: str) -> None:
        await trio.lowlevel.checkpoint()

    async def on_connection_changed(self, name: str, connected: bool) -> None:
        if not connected:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()

    async def on_service_stopped(self, name: str) -> None:
        await trio.sleep_forever()


class Blocks(Recorder):
    async def on_service_stopped(self) -> None:
        self._record("stopped")
        await trio.sleep_forever()

    async def dispose(self) -> None:
        self._record("dispose")
        await trio.sleep_forever()


@pytest.mark.parametrize("stopped_by", ["stopping", "cancellation"])
async def test_hanging_handlers_and_plugins_cannot_hold_up_stopping(
    tmp_path: Path, stopped_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    blocked, good = Blocks("blocked"), Recorder("good")
    async with running_server(tmp_path) as server:
        service = Service(
            config(tmp_path, server, stop_timeout=0.3),
            plugins=[blocked, good],
            handlers=ServiceHandlers(lifecycle=HangsAtStop()),
        )
        stopping = trio.Event()
        with trio.fail_after(10):  # stop_timeout is 0.3 s: far less, unless something hangs
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run, stopping)
                await good.wait_for(lambda c: ("connected", True) in c, "connected")
                if stopped_by == "stopping":
                    stopping.set()
                else:
                    nursery.cancel_scope.cancel()
    assert good.calls[-3:] == [("connected", False), "stopped", "dispose"]
    assert blocked.calls[-2:] == ["stopped", "dispose"]  # cut at each, but called
    assert "plugin blocked: dispose took over 0.3 s: cut" in caplog.text
    assert "lifecycle handler took over 0.3 s: cut" in caplog.text


class SlowToStart(Recorder):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = trio.Event()

    async def initialize(self, context: ServiceContext) -> None:
        await self.gate.wait()
        await super().initialize(context)


async def test_services_start_side_by_side_a_slow_start_holds_up_no_other(tmp_path: Path) -> None:
    slow, quick = SlowToStart("slow"), Recorder("quick")
    async with running_server(tmp_path) as server:
        base = config(tmp_path, server, stop_timeout=60)  # the slow start is not cut short
        services = [
            Service(
                attrs.evolve(base, name=name, journal_dir=str(tmp_path / name)), plugins=[plugin]
            )
            for name, plugin in (("first", slow), ("second", quick))
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_services, services)
            await quick.wait_for(lambda c: ("connected", True) in c, "the second one runs")
            assert slow.calls == []  # the first one is still initializing its plugin
            slow.gate.set()
            await slow.wait_for(lambda c: ("connected", True) in c, "the first one runs too")
            nursery.cancel_scope.cancel()


class StuckNotifications:
    async def notify(self, title: str, body: str) -> None:
        await trio.sleep_forever()


async def test_stuck_notifications_drop_past_100_and_hold_up_no_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler, watcher = Handled(), Recorder("watcher")
    async with running_server(tmp_path) as server:
        service = Service(
            # (A notification is cut after stop_timeout: 60 s, so the stuck one stays stuck.)
            config(tmp_path, server, notifications=True, stop_timeout=60),
            plugins=[watcher],
            handlers=ServiceHandlers(message=handler, notification=StuckNotifications()),
        )
        async with running(service):
            await watcher.wait_for(lambda c: ("connected", True) in c, "connected")
            events = [f"e{i}" for i in range(105)]
            await publish(server, tmp_path, *events)
            await handler.events.wait_until(lambda: handler.events == events)
    # One shown (stuck), 100 waiting, the rest dropped, each logged (5 if the first was not
    # taken from the queue yet when it filled).
    assert 4 <= caplog.text.count("notifications are 100 behind: dropped") <= 5
