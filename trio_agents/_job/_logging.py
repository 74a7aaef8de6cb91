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
from collections.abc import Callable, Mapping
from typing import Any

#: Fields of the job whose code is running, or None outside any job.
job_log_fields: contextvars.ContextVar[Callable[[], Mapping[str, Any]] | None] = (
    contextvars.ContextVar("trio_agents_job_log_fields", default=None)
)

_installed = False


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
            for key, value in fields().items():
                if key not in record.__dict__:
                    record.__dict__[key] = value
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
