"""``simulate_job``: run one job against an in-process stand-in, with a script.

This is how users test their own agents::

    async def script(sim):
        async with sim.participant("alice") as alice:
            await alice.send_text("hi", topic="chat")
            await alice.wait_for_text()
        # alice left: LiveKit's rule closes the room, which ends the job

    result = await simulate_job(entrypoint, script=script)
    assert result.outcome.ok
    assert "callback_done" in result.kinds()

Everything runs in the caller's trio run (memory transport), so under
``trio.testing.MockClock(autojump_threshold=0)`` a job's whole life, deadlines
included, takes no real time.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from livekit.protocol import agent

from .._groups import sole_error
from .._job._context import EntrypointFn, JobProcess, run_job
from .._job._control import JobControl
from .._types import JobAcceptArguments, JobOutcome, RunningJobInfo
from ._participants import SimulatedParticipant
from ._server import LocalServer, open_local_server


@attrs.frozen
class LifecycleEvent:
    """One step of a simulated job: ``kind`` with its arguments, at ``time``
    seconds after the job started (trio's clock)."""

    time: float
    kind: str
    args: tuple[Any, ...] = ()


@attrs.frozen
class SimulationResult:
    """What ``simulate_job`` observed."""

    outcome: JobOutcome
    events: tuple[LifecycleEvent, ...]
    job: agent.Job

    def kinds(self) -> list[str]:
        """The event kinds in order ("entrypoint_started", "connected", "shutdown", ...)."""
        return [e.kind for e in self.events]

    def of_kind(self, kind: str) -> list[LifecycleEvent]:
        return [e for e in self.events if e.kind == kind]


@attrs.define(eq=False)
class Simulation:
    """What a script gets: the server, the room, and the job's control line."""

    server: LocalServer
    room: str
    job: agent.Job
    control: JobControl

    def participant(
        self,
        identity: str,
        *,
        kind: str = "standard",
        name: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[SimulatedParticipant]:
        """Join the job's room as a simulated participant for the ``async with`` block."""
        return self.server.simulated_participant(
            identity, room=self.room, kind=kind, name=name, metadata=metadata, attributes=attributes
        )

    def terminate(self) -> None:
        """What the server's JobTermination does: ask the job to shut down."""
        self.control.request_shutdown("job terminated by the server")

    def drain(self) -> None:
        """What a draining worker does: set ``ctx.shutting_down`` in the job."""
        self.control.notify_draining()


async def simulate_job(
    entrypoint: EntrypointFn,
    *,
    script: Callable[[Simulation], Awaitable[None]] | None = None,
    server: LocalServer | None = None,
    room: str = "simulated-room",
    metadata: str = "",
    agent_identity: str | None = None,
    shutdown_process_timeout: float = 10.0,
    delete_room_on_close: bool = False,
    departure_timeout: float = 20.0,
    empty_timeout: float = 300.0,
    userdata: Mapping[str, Any] | None = None,
) -> SimulationResult:
    """Run ``entrypoint`` as one job in ``room`` of a stand-in server, beside ``script``.

    The job is the real job tree (INLINE), joined to a real stand-in room
    through the simulated backend.  ``script(sim)`` runs concurrently and is
    cancelled once the job has ended; the job ends by its usual triggers (the
    room closing after everyone left, ``ctx.shutdown``, ``sim.terminate()``,
    the entrypoint raising).

    With ``server=None`` a memory-only server is opened for the call, with
    ``departure_timeout`` and ``empty_timeout``.
    """
    if not callable(entrypoint):
        raise TypeError("entrypoint must be an async function taking a JobContext")
    if shutdown_process_timeout < 0:
        raise ValueError(f"shutdown_process_timeout must be >= 0, got {shutdown_process_timeout!r}")
    try:
        return await _simulate(
            entrypoint,
            script,
            server,
            room,
            metadata,
            agent_identity,
            shutdown_process_timeout,
            delete_room_on_close,
            departure_timeout,
            empty_timeout,
            userdata,
        )
    except BaseException as exc:
        escaped = exc
    # one error (a KeyboardInterrupt from a participant task, a script's
    # failure) reaches the caller as itself, not inside the groups of the
    # nurseries it crossed (raised outside the except: its context is kept)
    raise sole_error(escaped) or escaped


async def _simulate(
    entrypoint: EntrypointFn,
    script: Callable[[Simulation], Awaitable[None]] | None,
    server: LocalServer | None,
    room: str,
    metadata: str,
    agent_identity: str | None,
    shutdown_process_timeout: float,
    delete_room_on_close: bool,
    departure_timeout: float,
    empty_timeout: float,
    userdata: Mapping[str, Any] | None,
) -> SimulationResult:
    async with _server(server, departure_timeout, empty_timeout) as srv:
        srv.rooms.create(room)
        snapshot = srv.rooms.get(room)
        assert snapshot is not None
        job_id = "AJ_sim" + secrets.token_hex(5)
        identity = agent_identity or f"agent-{job_id}"
        job = agent.Job(
            id=job_id,
            type=agent.JT_ROOM,
            room=snapshot.snapshot(),
            metadata=metadata,
            dispatch_id="AD_sim" + secrets.token_hex(5),
        )
        token = srv.participant_token(
            identity, room, kind="agent", attributes={"lk.agent.name": ""}
        )
        info = RunningJobInfo(
            job=job,
            url=srv.memory_url,
            token=token,
            worker_id="AW_simulated",
            accept_arguments=JobAcceptArguments(identity=identity),
            api_key=srv.api_key,
            api_secret=srv.api_secret,
        )
        control = JobControl()
        events: list[LifecycleEvent] = []
        start = trio.current_time()

        def record(kind: str, *args: Any) -> None:
            events.append(LifecycleEvent(trio.current_time() - start, kind, args))

        outcome: list[JobOutcome] = []
        async with trio.open_nursery() as nursery:
            if script is not None:
                sim = Simulation(server=srv, room=room, job=job, control=control)
                nursery.start_soon(script, sim)
            outcome.append(
                await run_job(
                    info,
                    entrypoint,
                    control,
                    proc=JobProcess(userdata=dict(userdata or {})),
                    shutdown_process_timeout=shutdown_process_timeout,
                    delete_room_on_close=delete_room_on_close,
                    recorder=record,
                )
            )
            record("outcome", outcome[0].kind.value, outcome[0].reason)
            nursery.cancel_scope.cancel()
        return SimulationResult(outcome=outcome[0], events=tuple(events), job=job)


@contextlib.asynccontextmanager
async def _server(
    server: LocalServer | None, departure_timeout: float, empty_timeout: float
) -> AsyncIterator[LocalServer]:
    if server is not None:
        yield server
        return
    async with open_local_server(
        departure_timeout=departure_timeout, empty_timeout=empty_timeout
    ) as srv:
        yield srv
