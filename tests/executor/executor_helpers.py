"""Running a real worker against a loopback stand-in, for the executor tests."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import executor_agents
import psutil
import trio
from livekit.protocol import agent
from livekit.protocol.agent_dispatch import RoomAgentDispatch

from trio_agents import AgentServer, JobExecutorType
from trio_agents.testing import JobRecord, LocalServer, open_local_server

TERMINAL = (agent.JS_SUCCESS, agent.JS_FAILED)


@contextlib.asynccontextmanager
async def running_worker(
    executor: JobExecutorType = JobExecutorType.PROCESS, **options: Any
) -> AsyncIterator[tuple[LocalServer, AgentServer]]:
    """A stand-in on loopback TCP and a registered worker running ``executor_agents.entrypoint``."""
    options.setdefault("num_idle_processes", 1)
    options.setdefault("shutdown_process_timeout", 1.5)
    async with open_local_server(port=0, departure_timeout=1) as server:
        worker = AgentServer(
            server.url,
            server.api_key,
            server.api_secret,
            job_executor_type=executor,
            port=None,
            load_fnc=lambda: 0.0,
            **options,
        )
        worker.rtc_session(executor_agents.entrypoint)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await nursery.start(functools.partial(worker.run, handle_signals=False))
                await worker.wait_registered()
            yield server, worker
            with trio.fail_after(15):
                await worker.aclose()
            nursery.cancel_scope.cancel()


async def dispatch(server: LocalServer, room: str, metadata: str) -> JobRecord:
    """Create ``room`` with an automatic dispatch; the job once a worker has it."""
    server.rooms.create(room, agents=[RoomAgentDispatch(agent_name="", metadata=metadata)])
    return await server.wait_for_job(room=room)


async def wait_terminal(server: LocalServer, record: JobRecord) -> JobRecord:
    return await server.wait_for_job_status(record.job.id, *TERMINAL)


async def wait_for(predicate: Callable[[], Any], *, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy (the caller bounds the wait); its value."""
    while True:
        value = predicate()
        if value:
            return value
        await trio.sleep(interval)


async def wait_for_note(path: object, word: str) -> list[str]:
    """The first line of ``path`` whose first word is ``word``, once it exists."""

    def find() -> list[str] | None:
        for line in executor_agents.read_notes(path):
            if line[0] == word:
                return line
        return None

    result: list[str] = await wait_for(find)
    return result


def words(path: object) -> list[str]:
    return [line[0] for line in executor_agents.read_notes(path)]


def is_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie counts as gone: it runs no code).

    Orphans are reparented to whatever init the machine has, which may reap late.
    """
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
