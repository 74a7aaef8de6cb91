"""The stand-in's ``/agent`` endpoint: worker registry, dispatch, job state.

Follows livekit-server's ``pkg/agent`` and ``pkg/service/agentservice.go``
(v1.13.5; tests/differential holds it to the real server) on top of the shared sans-IO
``protocol.Connection`` in the SERVER role.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import random
import time
from collections.abc import Callable

import attrs
import jwt as pyjwt
import trio
from google.protobuf import json_format
from livekit import api as lkapi
from livekit.protocol import agent, agent_dispatch, models

from .. import protocol
from .._errors import ConnectionClosed
from .._sync import Changes as Changes
from .._tokens import quiet_dev_secret_warning
from ._asgi import Request, WebSocket
from ._rooms import DEPENDENT_KINDS, Participant, Room, RoomListener, new_sid
from ._twirp import verify_token

logger = logging.getLogger("trio_agents.testing")

#: Version the stand-in reports in ServerInfo: the LiveKit release it is held to
#: (tests/differential); >= 1.8.0 also keeps SDK features such as RPC on.
SERVER_VERSION = "1.13.5"
#: ServerInfo.protocol of that release.
SERVER_PROTOCOL = 17
AGENT_TOKEN_TTL = datetime.timedelta(hours=1)
TERMINAL = (agent.JS_SUCCESS, agent.JS_FAILED)


@attrs.define(eq=False)
class WorkerRecord:
    """A registered worker, as the server sees it."""

    id: str
    agent_name: str
    job_type: agent.JobType
    deployment: str
    permissions: models.ParticipantPermission
    version: str
    conn: protocol.Connection = attrs.field(repr=False)
    send: Callable[[protocol.Event], None] = attrs.field(repr=False)
    status: agent.WorkerStatus = agent.WS_AVAILABLE
    load: float = 0.0
    job_count: int = 0
    running: set[str] = attrs.field(factory=set)
    answers: dict[str, trio.MemorySendChannel[protocol.Availability | None]] = attrs.field(
        factory=dict, repr=False
    )
    closed: trio.Event = attrs.field(factory=trio.Event, repr=False)


@attrs.define(eq=False)
class JobRecord:
    """One job the server launched: the Job proto (with its state) and its history."""

    job: agent.Job
    worker_id: str | None = None
    #: Every status the job went through, oldest first.
    history: list[agent.JobStatus] = attrs.field(factory=list)
    attempts: list[str] = attrs.field(factory=list)

    @property
    def status(self) -> agent.JobStatus:
        return self.job.state.status

    @property
    def error(self) -> str:
        return self.job.state.error


class AgentHub(RoomListener):
    """Workers, job launch and job state of one stand-in server."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        api_key: str,
        api_secret: str,
        assignment_url: Callable[[], str | None] = lambda: None,
        availability_timeout: float = protocol.AVAILABILITY_TIMEOUT,
        register_timeout: float = protocol.REGISTER_TIMEOUT,
    ) -> None:
        self._nursery = nursery
        self._api_key = api_key
        self._api_secret = api_secret
        self._assignment_url = assignment_url
        self._availability_timeout = availability_timeout
        self._register_timeout = register_timeout
        self.workers: dict[str, WorkerRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.changes = Changes()
        self.rng = random.Random()
        self.node_id = new_sid("ND_")

    # --- room hooks (dispatch) -------------------------------------------------

    def room_created(self, room: Room) -> None:
        for d in list(room.dispatches.values()):
            self.launch_dispatch(room, d)

    def launch_dispatch(self, room: Room, d: agent_dispatch.AgentDispatch) -> None:
        """Launch the jobs of a new dispatch: one per room, and per present participant."""
        self.launch(room, d, agent.JT_ROOM)
        for p in list(room.participants.values()):
            if not p.dependent:
                self.launch(room, d, agent.JT_PARTICIPANT, p)
                if p.info.is_publisher:
                    self.launch(room, d, agent.JT_PUBLISHER, p)

    def participant_joined(self, room: Room, participant: Participant) -> None:
        if participant.info.kind in DEPENDENT_KINDS:
            return
        for d in list(room.dispatches.values()):
            self.launch(room, d, agent.JT_PARTICIPANT, participant)

    def track_published(self, room: Room, participant: Participant) -> None:
        if participant.info.kind in DEPENDENT_KINDS:
            return
        for d in list(room.dispatches.values()):
            self.launch(room, d, agent.JT_PUBLISHER, participant)

    def room_closed(self, room: Room) -> None:
        # LiveKit leaves job state alone here: the agents leave the room and
        # their workers report the end of the job.
        self.changes.notify()

    # --- launching ----------------------------------------------------------------

    def launch(
        self,
        room: Room,
        dispatch: agent_dispatch.AgentDispatch,
        job_type: agent.JobType,
        participant: Participant | None = None,
    ) -> JobRecord | None:
        """Start assigning one job; None (and a log line) when no worker could take it."""
        if not self._has_worker(dispatch.agent_name, job_type):
            if job_type == agent.JT_ROOM:
                logger.debug(
                    "not dispatching agent job since no worker is available "
                    "(agent_name=%r, room=%s)",
                    dispatch.agent_name,
                    room.name,
                )
            return None
        job = agent.Job(
            id=new_sid("AJ_"),
            dispatch_id=dispatch.id,
            type=job_type,
            room=room.snapshot(),
            metadata=dispatch.metadata,
            agent_name=dispatch.agent_name,
            attributes=dict(dispatch.attributes),
        )
        if participant is not None:
            job.participant.CopyFrom(participant.info)
        record = JobRecord(job=job)
        self.jobs[job.id] = record
        self._nursery.start_soon(self._assign, record, dispatch)
        return record

    def _has_worker(self, agent_name: str, job_type: agent.JobType) -> bool:
        return any(
            w.agent_name == agent_name and w.job_type == job_type for w in self.workers.values()
        )

    def _has_any_worker(self, agent_name: str) -> bool:
        return any(w.agent_name == agent_name for w in self.workers.values())

    def _select(self, job: agent.Job, attempted: set[str]) -> WorkerRecord | None:
        """LiveKit's selectWorkerWeightedByLoad."""
        candidates = [
            w
            for w in self.workers.values()
            if w.agent_name == job.agent_name
            and w.job_type == job.type
            and w.deployment == job.deployment
            and w.status == agent.WS_AVAILABLE
            and w.id not in attempted
            and not w.closed.is_set()
        ]
        weights = [max(0.0, 1.0 - w.load) for w in candidates]
        if not candidates or sum(weights) <= 0:
            return None
        return self.rng.choices(candidates, weights=weights)[0]

    async def _assign(self, record: JobRecord, dispatch: agent_dispatch.AgentDispatch) -> None:
        job = record.job
        attempted: set[str] = set()
        while True:
            worker = self._select(job, attempted)
            if worker is None:
                logger.info(
                    "no worker available for job %s (agent_name=%r)", job.id, job.agent_name
                )
                self._set_state(record, agent.JS_FAILED, "no workers available")
                return
            attempted.add(worker.id)
            record.attempts.append(worker.id)
            offered = agent.Job()
            offered.CopyFrom(job)
            now = time.time_ns()
            offered.state.status = agent.JS_RUNNING
            offered.state.worker_id = worker.id  # (agent_id: unset by LiveKit OSS)
            offered.state.started_at = offered.state.updated_at = now
            answer = await self._offer(worker, offered)
            if answer is None:
                if worker.closed.is_set():
                    continue  # ErrWorkerClosed: try the next worker
                logger.warning(
                    "worker %s did not answer availability for job %s", worker.id, job.id
                )
                self._set_state(record, agent.JS_FAILED, "availability timeout")
                return
            if answer.terminate:
                self._set_state(record, agent.JS_SUCCESS, "")
                return
            if not answer.available:
                continue
            attrs_ = dict(answer.participant_attributes)
            attrs_["lk.agent_name"] = worker.agent_name
            identity = answer.participant_identity
            offered.state.participant_identity = identity
            token = self.agent_token(worker, job.room.name, answer, attrs_)
            try:
                worker.send(
                    protocol.JobAssignment(job=offered, token=token, url=self._assignment_url())
                )
            except (protocol.LocalProtocolError, ConnectionClosed) as exc:
                logger.warning("could not assign job %s to %s: %s", job.id, worker.id, exc)
                continue
            record.job.CopyFrom(offered)
            record.worker_id = worker.id
            record.history.append(agent.JS_RUNNING)
            worker.running.add(job.id)
            d_job = agent.Job()
            d_job.CopyFrom(offered)
            dispatch.state.jobs.append(d_job)
            self.changes.notify()
            return

    async def _offer(self, worker: WorkerRecord, job: agent.Job) -> protocol.Availability | None:
        send, recv = trio.open_memory_channel[protocol.Availability | None](1)
        worker.answers[job.id] = send
        try:
            try:
                worker.send(protocol.AvailabilityRequest(job=job))
            except (protocol.LocalProtocolError, ConnectionClosed):
                return None
            with trio.move_on_after(self._availability_timeout + 1):
                async with recv:
                    return await recv.receive()
            return None
        except trio.EndOfChannel:
            return None
        finally:
            worker.answers.pop(job.id, None)

    def agent_token(
        self,
        worker: WorkerRecord,
        room: str,
        answer: protocol.Availability,
        attributes: dict[str, str],
    ) -> str:
        """The room-join JWT of an agent participant (protocol/agent/token.go)."""
        perms = worker.permissions
        grants = lkapi.VideoGrants(
            room_join=True,
            agent=True,
            room=room,
            can_subscribe=perms.can_subscribe,
            can_publish=perms.can_publish,
            can_publish_data=perms.can_publish_data,
            # omitted unless set, as LiveKit's JSON leaves out a false "hidden"
            hidden=perms.hidden or None,
            can_update_own_metadata=perms.can_update_metadata,
            can_subscribe_metrics=perms.can_subscribe_metrics,
        )
        quiet_dev_secret_warning(self._api_secret)
        token = (
            lkapi.AccessToken(self._api_key, self._api_secret)
            .with_identity(answer.participant_identity)
            .with_name(answer.participant_name)
            .with_metadata(answer.participant_metadata)
            .with_attributes(attributes)
            .with_kind("agent")
            .with_grants(grants)
            .with_ttl(AGENT_TOKEN_TTL)
            .to_jwt()
        )
        # LiveKit's tokens also carry "iat" and the identity as its own claim
        claims = pyjwt.decode(token, options={"verify_signature": False})
        claims["iat"] = claims["nbf"]
        claims["identity"] = answer.participant_identity
        return pyjwt.encode(claims, self._api_secret, algorithm="HS256")

    def _set_state(self, record: JobRecord, status: agent.JobStatus, error: str) -> None:
        st = record.job.state
        now = time.time_ns()
        if st.status == agent.JS_PENDING and status != agent.JS_PENDING:
            st.started_at = now
        st.status = status
        st.error = error
        st.updated_at = now
        if status in TERMINAL:
            st.ended_at = now
        record.history.append(status)
        self.changes.notify()

    # --- termination --------------------------------------------------------------

    def terminate(self, job_id: str) -> bool:
        """Send JobTermination if the job still runs on a worker (DeleteDispatch)."""
        record = self.jobs.get(job_id)
        if record is None or record.worker_id is None:
            return False
        worker = self.workers.get(record.worker_id)
        if worker is None or job_id not in worker.running:
            return False
        try:
            worker.send(protocol.JobTermination(job_id=job_id))
        except (protocol.LocalProtocolError, ConnectionClosed):
            return False
        return True

    # --- the /agent websocket -----------------------------------------------------

    def _check_auth(self, request: Request) -> str | None:
        """LiveKit's auth middleware and agent upgrade check: the 401 body, or None if allowed.

        A missing token is no error for the middleware; the upgrade then finds no
        ``video.agent`` grant (pkg/service/auth.go, agentservice.go).
        """
        header = request.headers.get("authorization", "")
        if header and not header.startswith("Bearer "):
            return "invalid authorization header. Must start with Bearer "
        token = header[len("Bearer ") :] if header else request.query.get("access_token", "")
        claims = None
        if token:
            claims, refusal = verify_token(token, self._api_key, self._api_secret)
            if refusal is not None:
                return refusal
        if claims is None or claims.video is None or not claims.video.agent:
            return "no permissions to access the room"
        return None

    async def serve(self, ws: WebSocket) -> None:
        """Serve one worker connection until it closes or breaks the protocol."""
        refusal = self._check_auth(ws.request)
        if refusal is not None:
            await ws.reject(401, refusal)
            return
        await ws.accept()
        conn = protocol.Connection(
            protocol.Role.SERVER,
            clock=trio.current_time,
            register_timeout=self._register_timeout,
            availability_timeout=self._availability_timeout,
        )
        outbox_send, outbox_recv = trio.open_memory_channel[bytes | str](math.inf)
        wake = Changes()
        json_mode = False
        worker: WorkerRecord | None = None

        def send(event: protocol.Event) -> None:
            data = conn.send(event)
            wake.notify()
            if json_mode:
                msg = agent.ServerMessage.FromString(data)
                # compact, as Go's protojson writes it
                fields = json_format.MessageToDict(msg)
                outbox_send.send_nowait(json.dumps(fields, separators=(",", ":")))
            else:
                outbox_send.send_nowait(data)

        async def writer() -> None:
            async for data in outbox_recv:
                await ws.send_message(data)

        async def timers(cancel: trio.CancelScope) -> None:
            while True:
                deadline = conn.next_deadline()
                with trio.move_on_at(deadline):
                    await wake.wait_until(lambda d=deadline: conn.next_deadline() != d)  # type: ignore[misc]
                    continue
                for event in conn.handle_timer(trio.current_time()):
                    if isinstance(event, protocol.RegisterTimeout):
                        logger.warning("worker did not register in time; closing")
                        cancel.cancel()
                        return
                    if isinstance(event, protocol.AvailabilityTimeout) and worker is not None:
                        ch = worker.answers.get(event.job_id)
                        if ch is not None:
                            ch.send_nowait(None)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(timers, nursery.cancel_scope)
                while True:
                    raw = await ws.get_message()
                    if isinstance(raw, str):
                        json_mode = True
                        try:
                            raw = json_format.Parse(raw, agent.WorkerMessage()).SerializeToString()
                        except json_format.ParseError as exc:
                            raise protocol.RemoteProtocolError(
                                f"bad JSON WorkerMessage: {exc}"
                            ) from exc
                    event = conn.receive_message(raw)
                    wake.notify()
                    if event is None:
                        continue
                    if isinstance(event, protocol.Register):
                        worker = self._register(event, conn, send)
                    elif worker is not None:
                        self._handle(worker, event)
                    elif isinstance(event, protocol.Ping):
                        send(
                            protocol.Pong(
                                last_timestamp=event.timestamp, timestamp=int(time.time() * 1000)
                            )
                        )
        except* protocol.RemoteProtocolError as group:
            logger.warning("closing worker connection: %s", group.exceptions[0])
        except* ConnectionClosed:
            pass
        finally:
            if worker is not None:
                self._deregister(worker)
            with trio.CancelScope(shield=True):
                await ws.aclose()

    def _register(
        self,
        event: protocol.Register,
        conn: protocol.Connection,
        send: Callable[[protocol.Event], None],
    ) -> WorkerRecord:
        worker = WorkerRecord(
            id=new_sid("AW_"),
            agent_name=event.agent_name,
            job_type=event.job_type,
            deployment=event.deployment,
            permissions=event.permissions,
            version=event.version,
            conn=conn,
            send=send,
        )
        self.workers[worker.id] = worker
        send(
            protocol.Registered(
                worker_id=worker.id,
                server_info=models.ServerInfo(
                    edition=models.ServerInfo.Standard,
                    version=SERVER_VERSION,
                    protocol=SERVER_PROTOCOL,
                    node_id=self.node_id,
                    agent_protocol=1,
                ),
            )
        )
        logger.info("worker %s registered (agent_name=%r)", worker.id, worker.agent_name)
        self.changes.notify()
        return worker

    def _deregister(self, worker: WorkerRecord) -> None:
        worker.closed.set()
        self.workers.pop(worker.id, None)
        for ch in list(worker.answers.values()):
            ch.close()
        logger.info("worker %s deregistered", worker.id)
        self.changes.notify()

    def _handle(self, worker: WorkerRecord, event: protocol.Event) -> None:
        match event:
            case protocol.Availability():
                ch = worker.answers.get(event.job_id)
                if ch is not None:
                    ch.send_nowait(event)
            case protocol.UpdateWorkerStatus():
                if event.status is not None:
                    worker.status = event.status
                worker.load = event.load or 0.0
                worker.job_count = event.job_count
                self.changes.notify()
            case protocol.UpdateJobStatus():
                record = self.jobs.get(event.job_id)
                if record is not None:
                    self._set_state(record, event.status, event.error)
                if event.status in TERMINAL:
                    worker.running.discard(event.job_id)
            case protocol.Ping():
                worker.send(
                    protocol.Pong(last_timestamp=event.timestamp, timestamp=int(time.time() * 1000))
                )
            case protocol.MigrateJob():
                for job_id in event.job_ids:
                    worker.running.add(job_id)
                    record = self.jobs.get(job_id)
                    if record is not None:
                        record.worker_id = worker.id
                self.changes.notify()
            case protocol.SimulateJob():
                self._simulate(worker, event)
            case _:  # pragma: no cover - the protocol core only lets worker events through
                logger.debug("ignoring %r", event)

    def _simulate(self, worker: WorkerRecord, event: protocol.SimulateJob) -> None:
        job_type = agent.JT_PUBLISHER if event.participant is not None else agent.JT_ROOM
        job = agent.Job(
            id=new_sid("AJ_"), type=job_type, room=event.room, agent_name=worker.agent_name
        )
        if event.participant is not None:
            job.participant.CopyFrom(event.participant)
        record = JobRecord(job=job)
        self.jobs[job.id] = record
        self._nursery.start_soon(
            self._assign, record, agent_dispatch.AgentDispatch(agent_name=worker.agent_name)
        )
