"""One error out, not a group: what public context managers and functions raise.

trio wraps whatever escapes a nursery in an ``ExceptionGroup``, even a single error. Our public
API raises the error itself when one thing went wrong (users write ``except RealtimeError``), and a
group only when several independent failures really happened (catch those with ``except*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

__all__ = ["single_error"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise a group that holds one exception (at any depth) as that exception. ``Cancelled``
    beside one other exception counts as nothing (a cancellation the failure caused)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        real = [exc for exc in leaves if not isinstance(exc, trio.Cancelled)]
        if len(real) == 1:
            raise real[0] from real[0].__cause__
        if not real and leaves:
            raise leaves[0] from None
        raise
