"""``JobRequest``: the worker's question to ``on_request`` (take this job?)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from livekit.protocol import agent, models

from .._errors import TrioAgentsError
from .._types import JobAcceptArguments


class AssignmentTimeoutError(TrioAgentsError):
    """The server never assigned a job that was accepted."""


class JobRequest:
    """A job offered to this worker.  Answer it once: ``accept`` or ``reject``.

    Returning from ``on_request`` without answering rejects the job without
    terminating it, so the server may offer it to another worker.
    """

    def __init__(
        self,
        job: agent.Job,
        *,
        on_accept: Callable[[JobAcceptArguments], Awaitable[None]],
        on_reject: Callable[[bool], Awaitable[None]],
        agent_name: str,
    ) -> None:
        self._job = job
        self._on_accept = on_accept
        self._on_reject = on_reject
        self._agent_name = agent_name
        self.answer: str | None = None  # "accept" / "reject"

    @property
    def job(self) -> agent.Job:
        return self._job

    @property
    def id(self) -> str:
        return self._job.id

    @property
    def room(self) -> models.Room:
        return self._job.room

    @property
    def publisher(self) -> models.ParticipantInfo | None:
        return self._job.participant if self._job.HasField("participant") else None

    @property
    def agent_name(self) -> str:
        return self._job.agent_name

    def _claim(self) -> None:
        if self.answer is not None:
            raise RuntimeError(f"job request {self.id} was already answered ({self.answer})")

    async def accept(
        self,
        *,
        name: str = "",
        identity: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        """Take the job; returns once the server assigned it and it was launched.

        ``identity`` defaults to ``agent-<job id>``.  The attribute
        ``lk.agent.name`` is always added.

        Raises:
            AssignmentTimeoutError: the server did not assign the job in 7.5 s.
        """
        for arg, value in (("name", name), ("identity", identity), ("metadata", metadata)):
            if not isinstance(value, str):
                raise TypeError(f"{arg} must be a str, not {type(value).__name__}")
        if attributes is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
        ):
            raise TypeError("attributes must map str to str")
        self._claim()
        self.answer = "accept"
        attrs_ = {"lk.agent.name": self._agent_name, **(attributes or {})}
        await self._on_accept(
            JobAcceptArguments(
                identity=identity or f"agent-{self.id}",
                name=name,
                metadata=metadata,
                attributes=attrs_,
            )
        )

    async def reject(self, *, terminate: bool = True) -> None:
        """Decline the job.  ``terminate=True`` also ends it on the server
        (no other worker gets it); ``False`` lets the server try another worker."""
        self._claim()
        self.answer = "reject"
        await self._on_reject(terminate)
