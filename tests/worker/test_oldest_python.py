"""The shape of an error never depends on the interpreter's patch level.

Before CPython 3.11.4, ``raise X from None`` inside ``except*`` comes out
wrapped in a new ExceptionGroup; pyproject accepts any 3.11.  The tests that
pin error shapes (one-line CLI errors, errors leaving ``run()`` and
``simulate_job`` as themselves) run again here on the oldest interpreter on
the machine, with this environment's packages (same minor version, same ABI).
Set ``TRIO_AGENTS_OLDEST_PYTHON`` to choose it; under CI (``CI`` set) a
missing interpreter is a failure, not a skip.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OLDEST = os.environ.get("TRIO_AGENTS_OLDEST_PYTHON", "/usr/bin/python3")

SHAPE_TESTS = [
    "tests/worker/test_worker_review.py::test_an_entrypoint_defined_under_the_main_guard_is_a_one_line_error",
    "tests/worker/test_worker_health.py::test_a_busy_health_port_is_a_worker_error",
    "tests/testing/test_local_server_cli.py::test_a_port_in_use_is_a_one_line_error",
    "tests/executor/test_process_review.py::test_an_entrypoint_job_processes_cannot_reach_is_a_worker_error",
    "tests/executor/test_process_review.py::test_an_agent_module_the_zygote_cannot_import_is_a_one_line_worker_error",
    "tests/job/test_job_promise.py::test_a_base_exception_of_a_participant_task_surfaces_as_itself",
    "tests/job/test_job_end_triggers.py::test_sys_exit_in_job_code_fails_the_job_and_goes_on_up",
    "tests/executor/test_executor_promise.py::test_thread_jobs_cannot_use_an_in_memory_server",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the error-shape tests on the oldest python: {reason}")
    pytest.skip(reason)


def _version(python: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(int(part) for part in out.split())


def test_error_shapes_hold_on_the_oldest_python() -> None:
    if not os.path.exists(OLDEST):
        _unavailable(f"{OLDEST} is not installed (set TRIO_AGENTS_OLDEST_PYTHON)")
    version = _version(OLDEST)
    if version is None or version[:2] != sys.version_info[:2]:
        # another minor version cannot load this environment's compiled packages
        wanted = f"{sys.version_info[0]}.{sys.version_info[1]}"
        _unavailable(f"{OLDEST} is python {version}, not {wanted}")
    paths = [str(ROOT), *site.getsitepackages()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    result = subprocess.run(
        [OLDEST, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SHAPE_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (version, result.stdout[-6000:], result.stderr[-2000:])
    summary = result.stdout.strip().splitlines()[-1]
    assert "passed" in summary, summary
    assert "skipped" not in summary, summary
