"""Per-job log fields: every record emitted inside a job carries them.

A contextvar holds the current job's fields; trio tasks inherit it from the
task that spawned them, so every task of the job nursery sees it.  A log
record factory (installed once, chained to whatever factory was there)
copies the fields onto each record without overwriting existing attributes.
No handler is installed: formatting stays the application's business.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: Fields of the job whose code is running, or None outside any job.
job_log_fields: contextvars.ContextVar[Callable[[], Mapping[str, Any]] | None] = (
    contextvars.ContextVar("trio_agents_job_log_fields", default=None)
)

_installed = False


class _RecordDict(dict[str, Any]):
    """A record's ``__dict__`` in which the job's fields give way to ``extra``.

    ``Logger.makeRecord`` refuses an ``extra`` key that the record already
    has (``KeyError: "Attempt to overwrite 'room' in LogRecord"``).  The job's
    fields must not make ``logger.info(..., extra={"room": ...})`` fail inside
    a job, so they do not count as present until something sets them.
    """

    def __init__(self, data: Mapping[str, Any], soft: Iterable[str]) -> None:
        super().__init__(data)
        self._soft = set(soft)

    def __contains__(self, key: object) -> bool:
        return key not in self._soft and super().__contains__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._soft.discard(key)
        super().__setitem__(key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled and copied (QueueHandler, IPC) as the plain dict it holds
        return (dict, (dict(self),))


def install_record_factory() -> None:
    """Chain a record factory that stamps the current job's fields (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        fields = job_log_fields.get()
        if fields is not None:
            added = {k: v for k, v in fields().items() if k not in record.__dict__}
            if added:
                object.__setattr__(
                    record, "__dict__", _RecordDict({**record.__dict__, **added}, added)
                )
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
