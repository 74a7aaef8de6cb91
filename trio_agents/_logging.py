"""Logging set-up for the command line (the library itself installs no handler)."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from typing import Any

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
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": self.formatTime(record),
            "level": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | None) else repr(v)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out)


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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("hypercorn", "httpx", "httpcore", "trio-websocket", "trio_websocket"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
