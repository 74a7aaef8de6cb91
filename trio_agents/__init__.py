"""trio-agents: the LiveKit Agents job lifecycle, rebuilt on trio.

Each job is one nursery tree with one teardown deadline; see docs/lifecycle.md.

Names are imported lazily (PEP 562), so ``import trio_agents.protocol`` stays
free of trio and of everything else the worker needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._job._context import JobContext as JobContext
    from ._job._context import JobProcess as JobProcess
    from ._job._context import JobShutdownError as JobShutdownError
    from ._job._context import get_job_context as get_job_context
    from ._types import DEFAULT_PARTICIPANT_KINDS as DEFAULT_PARTICIPANT_KINDS
    from ._types import AutoSubscribe as AutoSubscribe
    from ._types import JobExecutorType as JobExecutorType
    from ._types import JobOutcome as JobOutcome
    from ._types import OutcomeKind as OutcomeKind
    from ._types import ServerType as ServerType
    from ._types import WorkerPermissions as WorkerPermissions
    from ._version import __version__ as __version__
    from ._worker._request import AssignmentTimeoutError as AssignmentTimeoutError
    from ._worker._request import JobRequest as JobRequest
    from ._worker._server import AgentServer as AgentServer
    from ._worker._server import WorkerError as WorkerError
    from .cli import run_app as run_app

_LAZY: dict[str, str] = {
    "JobContext": "._job._context",
    "JobProcess": "._job._context",
    "JobShutdownError": "._job._context",
    "get_job_context": "._job._context",
    "DEFAULT_PARTICIPANT_KINDS": "._types",
    "AutoSubscribe": "._types",
    "JobExecutorType": "._types",
    "JobOutcome": "._types",
    "OutcomeKind": "._types",
    "ServerType": "._types",
    "WorkerPermissions": "._types",
    "__version__": "._version",
    "AssignmentTimeoutError": "._worker._request",
    "JobRequest": "._worker._request",
    "AgentServer": "._worker._server",
    "WorkerError": "._worker._server",
    "run_app": ".cli",
}

#: The public names are the keys of ``_LAZY``; the block above repeats them for
#: type checkers (tests/test_exports.py checks that the two agree).
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
