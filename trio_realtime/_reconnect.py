"""The supervisor's I/O half: run links one after another, and between them do what the pure
table of ``_supervisor.py`` says (wait the backoff, refresh the token, fail, stop)."""

from __future__ import annotations

from collections.abc import Callable

import trio

from ._backoff import Backoff
from ._config import ConnectionLog, RealtimeConfig
from ._errors import AuthenticationFailed, ConnectionFailed, LinkClosed
from ._link import LinkDown, LinkHooks, run_link
from ._service import ConnectionState
from ._supervisor import Action, Event, after_refresh, link_down, step
from ._tokens import Tokens

__all__ = ["Reconnect"]


class Reconnect:
    """Runs a connection's links until it fails or closes, and counts its reconnects.

    ``get_state``/``set_state`` read and move the connection's state; ``on_up`` runs once a link
    is resumed (before its tasks start), ``on_down`` once a link ended, ``on_first`` once, after
    the first attempt ended (connected or not)."""

    def __init__(
        self,
        config: RealtimeConfig,
        tokens: Tokens,
        log: ConnectionLog,
        get_state: Callable[[], ConnectionState],
        set_state: Callable[[ConnectionState], None],
    ) -> None:
        self._config = config
        self._tokens = tokens
        self._log = log
        self._get_state = get_state
        self._set_state = set_state
        self._backoff = Backoff(config.initial_retry_delay, config.max_retry_delay, config.jitter)
        self._network_changed = trio.Event()
        self._lost_at: float | None = None
        self.total = 0
        """Reconnect attempts made."""
        self.times: list[float] = []
        """Each time from losing a link to being connected again, in seconds."""
        self.failure: ConnectionFailed | None = None
        self.last_error: LinkClosed | None = None
        """Why the last link ended or the last attempt failed."""
        self._warned: set[str] = set()  # causes already logged at WARNING since the last link

    def network_changed(self) -> None:
        self._network_changed.set()

    def link_up(self) -> None:
        """A link is resumed."""
        if self._lost_at is not None:
            self.times.append(trio.current_time() - self._lost_at)
            self._lost_at = None
        self._tokens.failures = 0
        self._warned.clear()
        self._set_state(step(self._get_state(), Event.LINK_UP)[0])
        self._backoff.reset()

    async def run(
        self, hooks: LinkHooks, url: str, on_down: Callable[[], None], on_first: Callable[[], None]
    ) -> None:
        """Until the connection fails (then :attr:`failure` is set) or is cancelled."""
        config = self._config
        while True:
            down = await self._run_link(hooks, url, on_down)
            self.last_error = LinkClosed(down.code, down.reason)
            on_first()
            if down.journal_failed:
                event = Event.JOURNAL_FAILED
            else:
                event = link_down(down.code, self._backoff.attempt, config.max_retries)
            state, action = step(self._get_state(), event)
            if action is Action.REFRESH_TOKEN:
                event = await self._tokens.refresh()
                if event is Event.TOKEN_REFRESHED:
                    event = after_refresh(self._backoff.attempt, config.max_retries)
                state, action = step(state, event)
            if action is Action.FAIL:
                self._fail(event, down)  # logged as an error: no "retrying" warning before it
                return
            self._report(url, down)
            self._set_state(state)
            if action is Action.CONNECT_NOW:
                delay = 0.0
                self._backoff.attempt += 1
            elif action is Action.CONNECT_AFTER_INITIAL_DELAY:
                delay = self._backoff.at_least(config.initial_retry_delay)
            else:
                delay = self._backoff.next_delay()
            self._log.info("reconnecting in %.3f s after %s: %s", delay, down.code, down.reason)
            self._network_changed = trio.Event()
            with trio.move_on_after(delay):
                await self._network_changed.wait()  # network_changed() cuts it short
                self._log.info("network changed: reconnecting now")
            self.total += 1

    def _report(self, url: str, down: LinkDown) -> None:
        """Remember why the link ended; log each distinct cause once at WARNING (retries with
        the same cause at INFO), so a wrong URL or a server down is said, not retried in silence."""
        cause = ": ".join(str(part) for part in (down.code, down.reason) if part not in (None, ""))
        cause = cause or "no reason given"
        if cause in self._warned:
            self._log.info("link to %s ended: %s", url, cause)
        else:
            self._warned.add(cause)
            self._log.warning("link to %s ended: %s (retrying)", url, cause)

    async def _run_link(self, hooks: LinkHooks, url: str, on_down: Callable[[], None]) -> LinkDown:
        was_connected = False
        try:
            down = await run_link(hooks, url)
            was_connected = self._get_state() is ConnectionState.CONNECTED
            return down
        finally:
            on_down()
            if was_connected:
                self._lost_at = trio.current_time()

    def _fail(self, event: Event, down: LinkDown) -> None:
        error: type[ConnectionFailed] = ConnectionFailed
        code = down.code
        if event is Event.REFRESH_FAILED:
            message, error = self._tokens.why, AuthenticationFailed
        elif event is Event.RETRIES_EXHAUSTED:
            message = f"gave up after {self._config.max_retries} retries ({code}: {down.reason})"
        elif event is Event.JOURNAL_FAILED:
            message, code = down.reason, None
        else:
            message = f"the server refused the connection ({code}: {down.reason})"
        self._log.error("connection failed: %s", message)
        self.failure = error(message, code)
        self._set_state(ConnectionState.FAILED)
