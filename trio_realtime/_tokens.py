"""Tokens for the handshake: the one given, or those an auth delegate supplies and refreshes."""

from __future__ import annotations

from typing import Protocol

from ._config import ConnectionLog
from ._supervisor import Event

__all__ = ["AuthDelegate", "Tokens"]


class AuthDelegate(Protocol):
    """Supplies tokens for the handshake (see :class:`trio_realtime.CachedAuth`).

    ``get_token`` is asked before each connection attempt; ``refresh_token`` after the server
    refused the current token (close 4001) and ``get_token`` still returns that same token."""

    async def get_token(self) -> str: ...

    async def refresh_token(self) -> str: ...


class Tokens:
    """The token a connection resumes with, and its refresh after the server refused one."""

    def __init__(
        self, token: str | None, auth: AuthDelegate | None, max_failures: int, log: ConnectionLog
    ) -> None:
        self._log = log
        self.token = token
        self._auth = auth
        self._max_failures = max_failures
        self.failures = 0
        """Tokens refused in a row (reset once a link is up)."""
        self.why = ""
        """Why the last refresh failed."""

    async def current(self) -> str | None:
        if self._auth is not None and self.token is None:
            self.token = await self._auth.get_token()
        return self.token

    async def refresh(self) -> Event:
        """The server refused the token (4001): get another. ``TOKEN_REFRESHED`` (also when the
        delegate raised: the next attempt asks again) or ``REFRESH_FAILED`` (see :attr:`why`)."""
        auth = self._auth
        if auth is None:
            self.why = (
                "the server refused the token (4001) and there is no auth delegate to refresh it: "
                "give a token that server accepts (made with its secret, e.g. "
                "`trio-realtime token --data DIR` with the server's --data)"
            )
            return Event.REFRESH_FAILED
        self.failures += 1
        if self.failures >= self._max_failures:
            self.why = f"the server refused {self.failures} tokens in a row (4001)"
            return Event.REFRESH_FAILED
        refused = self.token
        try:
            # Another connection sharing the delegate may have refreshed already: use that.
            token = await auth.get_token()
            if token == refused:
                token = await auth.refresh_token()
        except Exception as exc:
            # Its message could quote a token: log the type only. The next attempt tries again.
            self._log.warning(
                "the auth delegate failed to refresh the token: %s", type(exc).__name__
            )
            return Event.TOKEN_REFRESHED
        if not isinstance(token, str) or not token:
            self.why = "the auth delegate returned no token"
            return Event.REFRESH_FAILED
        self.token = token
        return Event.TOKEN_REFRESHED
