"""``python agent.py dev`` reloads on a source change, after its running jobs end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio
from livekit.protocol import agent

from tests.worker.test_worker_cli import clean_env
from trio_agents import api
from trio_agents.testing import open_local_server

AGENT_SOURCE = """
import json, os, pathlib
from trio_agents import AgentServer, JobContext, run_app

VERSION = {version}
# a constant load: a busy test machine's CPU load of 1.0 would make servers skip it
server = AgentServer(load_fnc=lambda: 0.0)


@server.rtc_session(agent_name="reload-agent")
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    marker = pathlib.Path(os.environ["MARKERS"]) / (ctx.job.room.name + ".json")
    marker.write_text(json.dumps({{"version": VERSION, "pid": os.getpid()}}))


if __name__ == "__main__":
    run_app(server)
"""


async def poll(condition: Callable[[], bool]) -> None:
    """Wait for what another process writes to a file (no event to wait on)."""
    while not condition():  # noqa: ASYNC110 - the other side is a separate process
        await trio.sleep(0.05)


async def test_a_change_drains_running_jobs_then_restarts_on_the_new_code(
    tmp_path: Path,
) -> None:
    agent_file = tmp_path / "reload_agent.py"
    agent_file.write_text(AGENT_SOURCE.format(version=1))
    markers = tmp_path / "markers"
    markers.mkdir()
    log_path = tmp_path / "dev.log"
    async with open_local_server(port=0, departure_timeout=0.5) as server:
        lk = api.LiveKitAPI(server.url, server.api_key, server.api_secret)
        with log_path.open("wb") as log, trio.fail_after(90):
            proc = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    str(agent_file),
                    "dev",
                    "--url",
                    server.url,
                    "--api-key",
                    server.api_key,
                    "--api-secret",
                    server.api_secret,
                    "--log-level",
                    "info",
                ],
                env=clean_env(MARKERS=str(markers)),
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                await server.wait_for_workers(1, agent_name="reload-agent")
                (first_worker,) = server.agents.workers
                await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name="reload-agent", room="r1")
                )
                job1 = await server.wait_for_job(room="r1")
                await poll((markers / "r1.json").exists)
                assert json.loads((markers / "r1.json").read_text())["version"] == 1

                agent_file.write_text(AGENT_SOURCE.format(version=2))
                await poll(lambda: b"changed: draining before" in log_path.read_bytes())
                await trio.sleep(1.0)  # a reload that ignored the running job would show by now
                assert job1.status == agent.JS_RUNNING, "the reload must wait for the job"
                assert first_worker in server.agents.workers

                await lk.room.delete_room(api.DeleteRoomRequest(room="r1"))  # job 1 ends
                final = await server.wait_for_job_status(
                    job1.job.id, agent.JS_SUCCESS, agent.JS_FAILED
                )
                assert final.status == agent.JS_SUCCESS
                # the same process, restarted on the new code, registers again
                await server.agents.changes.wait_until(
                    lambda: any(w != first_worker for w in server.agents.workers)
                )
                await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name="reload-agent", room="r2")
                )
                await server.wait_for_job(room="r2")
                await poll((markers / "r2.json").exists)
                assert json.loads((markers / "r2.json").read_text())["version"] == 2
                assert proc.returncode is None  # exec, not exit: the same pid runs on
                await lk.room.delete_room(api.DeleteRoomRequest(room="r2"))  # nothing to drain
            finally:
                proc.terminate()
                with trio.move_on_after(20):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                await lk.aclose()
    assert b"reloading:" in log_path.read_bytes()
