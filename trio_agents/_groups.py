"""Exception groups where the library owns the nursery.

trio wraps whatever leaves a nursery in an ``ExceptionGroup``; how deep the
wrapping goes depends on how many nurseries an error crossed, which depends on
timing.  Where one error is all there is (after the ``Cancelled`` it was mixed
with), the library lets that error out as itself.

This is done with plain ``except`` clauses and a ``raise`` outside them, never
``raise ... from None`` inside ``except*``: before CPython 3.11.4 that wraps
the raised error in a new group.
"""

from __future__ import annotations

from collections.abc import Iterator

import trio


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions in ``exc``, groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from leaves(sub)
    else:
        yield exc


def sole_error(exc: BaseException) -> BaseException | None:
    """The one exception ``exc`` holds besides ``Cancelled``, or None.

    None when there are several (they stay a group), or only ``Cancelled``
    (which must go on to the scope that absorbs it).
    """
    if not isinstance(exc, BaseExceptionGroup):
        return None if isinstance(exc, trio.Cancelled) else exc
    _, rest = exc.split(trio.Cancelled)
    if rest is None:
        return None
    found = list(leaves(rest))
    return found[0] if len(found) == 1 else None
