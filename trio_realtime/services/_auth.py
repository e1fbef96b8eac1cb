"""A ready-made :class:`AuthDelegate`: one cached token, one refresh at a time.

Many connections (or tasks) that find the token expired at once cause a single call to your
``fetch`` function: the first starts it, the others wait for its result. Errors from ``fetch``
reach every waiter, as :class:`TokenRefreshFailed` (the original error chained, its text not
repeated: it could quote a token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from .._errors import TokenRefreshFailed

__all__ = ["CachedAuth", "TokenRefreshFailed"]


@attrs.define(eq=False)
class _Refresh:
    done: trio.Event = attrs.Factory(trio.Event)
    token: str | None = None
    error: BaseException | None = None


class CachedAuth:
    """``auth=CachedAuth(fetch)``: ``fetch`` is an async function returning a fresh token.

    Share one instance between connections to the same server so they share refreshes.
    ``refreshes`` counts the calls to ``fetch``.
    """

    def __init__(self, fetch: Callable[[], Awaitable[str]], *, token: str | None = None) -> None:
        if not callable(fetch):
            raise TypeError("fetch must be an async function returning a token")
        self._fetch = fetch
        self._token = token
        self._refresh: _Refresh | None = None
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"<CachedAuth token={'set' if self._token else 'none'} refreshes={self.refreshes}>"

    async def get_token(self) -> str:
        """The cached token (fetched on first use)."""
        if self._token is None:
            return await self.refresh_token()
        await trio.lowlevel.checkpoint()
        return self._token

    async def refresh_token(self) -> str:
        """Fetch a new token, or wait for the fetch already under way and share its result."""
        while True:
            refresh = self._refresh
            if refresh is None:
                return await self._lead()
            await refresh.done.wait()
            if refresh.token is not None:
                return refresh.token
            if not isinstance(refresh.error, trio.Cancelled):
                raise TokenRefreshFailed("fetching a new token failed") from refresh.error
            # The task doing the fetch was cancelled: take over.

    async def _lead(self) -> str:
        refresh = self._refresh = _Refresh()
        self.refreshes += 1
        try:
            token = await self._fetch()
            if not isinstance(token, str) or not token:
                raise TokenRefreshFailed(
                    f"fetch returned {type(token).__name__}, not a non-empty str"
                )
            self._token = refresh.token = token
            return token
        except BaseException as exc:
            refresh.error = exc
            if isinstance(exc, Exception) and not isinstance(exc, TokenRefreshFailed):
                raise TokenRefreshFailed("fetching a new token failed") from exc
            raise
        finally:
            self._refresh = None
            refresh.done.set()
