"""``fake_job_context``: a ``JobContext`` for unit tests, with no worker and no job tree.

For code that calls ``get_job_context()`` or takes a ``JobContext`` but does
not need the job's lifecycle (a helper that reads the job's metadata, a tool
function that sends text to the room).  To test the lifecycle itself
(participants joining, shutdown, teardown), use ``simulate_job``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from livekit.protocol import agent, models

from .. import rtc
from .._job._context import JobContext, JobProcess, _current
from .._job._control import JobControl
from .._types import JobAcceptArguments, RunningJobInfo


@contextlib.contextmanager
def fake_job_context(
    *,
    room: rtc.Room | None = None,
    job_id: str = "fake-job",
    job_metadata: str = "",
    agent_identity: str = "fake-agent",
    room_name: str = "fake-room",
    shutdown_process_timeout: float = 10.0,
) -> Iterator[JobContext]:
    """Make a fake ``JobContext`` the current job context for the ``with`` block.

    Inside the block ``get_job_context()`` returns it.  The context is a real
    ``JobContext`` with ``is_fake_job()`` true:

    * ``ctx.room`` is ``room`` if given (connect it yourself, e.g. to a
      ``LocalServer`` with ``rtc.connect_room``), else a new, unconnected
      ``rtc.Room``; the job's room name is ``room.name`` if it has one, else
      ``room_name``.
    * ``ctx.connect()`` returns at once (the caller owns the connection), and
      ``ctx.wait_for_participant()`` watches ``room``.
    * ``ctx.shutdown()`` sets ``ctx.shutting_down`` and ``ctx.shutdown_reason``;
      nothing is torn down and no shutdown callback runs (they are kept in the
      order they were added, if a test wants to call them).
    * ``ctx.delete_room()`` does nothing, as for any fake job.

    Use it inside a trio run (``shutdown()`` reads trio's clock).  Like
    livekit-agents' ``fake_job_context``, it is a plain ``with`` block.
    """
    the_room = room if room is not None else rtc.Room()
    job = agent.Job(
        id=job_id,
        type=agent.JT_ROOM,
        room=models.Room(name=the_room.name or room_name, sid="RM_fake" + secrets.token_hex(4)),
        metadata=job_metadata,
    )
    info = RunningJobInfo(
        job=job,
        url="",
        token="",
        worker_id="fake-worker",
        accept_arguments=JobAcceptArguments(identity=agent_identity),
        fake_job=True,
    )
    ctx = JobContext(
        info,
        proc=JobProcess(),
        control=JobControl(),
        shutdown_process_timeout=shutdown_process_timeout,
    )
    ctx.room = the_room
    # The caller owns the room: connect() is a no-op, and the room's
    # participant events wake wait_for_participant().  Participant
    # entrypoints never start (there is no job tree to own their tasks).
    ctx._connected = True
    ctx._install_room_handlers()
    ctx._handlers_installed = True
    the_room.on("disconnected", lambda _event: ctx._poke())
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
