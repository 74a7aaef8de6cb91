"""Logging set-up for the command line (the library itself installs no handler)."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import warnings
from typing import Any

#: LiveKit's extra level below DEBUG (``--log-level trace``).
TRACE = 5
#: The names ``--log-level`` accepts (those of the livekit-agents CLI, plus WARNING).
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class _Formatter(logging.Formatter):
    """``time level logger message key=value ...``: extra fields (job_id, ...) shown."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        }
        if extras:
            base += "  " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return base


class JSONFormatter(logging.Formatter):
    """One JSON object per line, on the fields livekit-agents' JSON logs use.

    ``level``, ``name``, ``message``, then the record's extra fields (the job's
    ``job_id``, ``room``, ``agent_name``, ... and ``log_context_fields``),
    ``pid``, ``code.file.path``, ``code.function.name``, ``code.line.number``,
    ``timestamp`` (ISO 8601, UTC), and ``exc_info``/``stack_info`` when present.
    An extra field never replaces ``level``, ``name`` or ``message``.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "level": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_") and k not in out:
                out[k] = v if isinstance(v, str | int | float | bool | None) else repr(v)
        out.setdefault("pid", record.process)
        out.setdefault("code.file.path", record.pathname)
        out.setdefault("code.function.name", record.funcName)
        out.setdefault("code.line.number", record.lineno)
        out["timestamp"] = datetime.datetime.fromtimestamp(
            record.created, tz=datetime.UTC
        ).isoformat()
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


def log_level(name: str) -> int:
    """The number of a ``--log-level`` name (any case): TRACE, DEBUG, ..., WARN, CRITICAL.

    Raises:
        ValueError: not one of those names.
    """
    upper = name.upper()
    if upper not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {name!r}")
    if upper == "TRACE":
        return TRACE
    return logging.WARNING if upper == "WARN" else int(logging.getLevelName(upper))


def setup_logging(level: str = "INFO", *, json_format: bool = False) -> None:
    """Send ``trio_agents`` (and the app's) records to stderr.

    Also silences PyJWT's warning about short HMAC keys: ``livekit-server
    --dev``'s documented secret is the 6-byte "secret", and a warning per
    signed token would drown the command line's own messages.
    """
    warnings.filterwarnings("ignore", message="The HMAC key is .* below the minimum")
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            _Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    logging.addLevelName(TRACE, "TRACE")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level(level))
    for noisy in ("hypercorn", "httpx", "httpcore", "trio-websocket", "trio_websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
