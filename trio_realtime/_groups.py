"""One error out, not a group: what public context managers and functions raise.

trio wraps whatever escapes a nursery in an ``ExceptionGroup``, even a single error. Our public
API raises the error itself when one thing went wrong (users write ``except RealtimeError``), and a
group only when several independent failures really happened (catch those with ``except*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio

__all__ = ["single", "single_error"]


def single(exc: BaseException) -> BaseException:
    """The one exception a (nested) exception group holds, ``Cancelled`` aside (a cancellation
    the failure caused); ``exc`` itself when it is no group or holds several. Several
    ``KeyboardInterrupt`` (one Ctrl-C seen by several tasks) count as one."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(reversed(item.exceptions))
        else:
            leaves.append(item)
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if real and all(isinstance(leaf, KeyboardInterrupt) for leaf in real):
        return real[0]
    if not real and leaves:
        return leaves[0]
    return exc


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise a group that holds one exception (see :func:`single`) as that exception."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = single(group)
        if leaf is group:
            raise
        raise leaf from leaf.__cause__
