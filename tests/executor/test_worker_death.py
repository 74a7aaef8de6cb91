"""A job process never outlives its worker, even one killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import executor_agents as agents
import psutil
import trio
from executor_helpers import dispatch, is_gone, wait_for, wait_for_note

from trio_agents.testing import open_local_server

SCRIPT = Path(__file__).with_name("worker_script.py")


async def test_sigkill_of_the_worker_leaves_no_job_process(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    async with open_local_server(port=0) as server:
        worker = await trio.lowlevel.open_process(
            [sys.executable, str(SCRIPT), server.url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        descendants: list[psutil.Process] = []
        try:
            with trio.fail_after(30):
                await server.wait_for_workers(1)
                # a job that cannot notice anything (its thread is blocked)
                await dispatch(server, "doomed", agents.metadata("block", notes))
                job_pid = int((await wait_for_note(notes, "start"))[1])
                await wait_for_note(notes, "blocking")

                def family() -> list[psutil.Process]:
                    # the zygote, the running job and the two idle processes
                    found = psutil.Process(worker.pid).children(recursive=True)
                    return found if len(found) >= 4 else []

                descendants = await wait_for(family)
            pids = {p.pid for p in descendants}
            assert job_pid in pids

            os.kill(worker.pid, signal.SIGKILL)
            await worker.wait()
            with trio.fail_after(5):
                await wait_for(lambda: all(is_gone(pid) for pid in pids))
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
            for proc in descendants:  # if the test failed, leave nothing behind
                with contextlib.suppress(psutil.Error):
                    proc.kill()  # psutil checks it is still the same process
