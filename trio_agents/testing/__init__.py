"""The stand-in LiveKit server and helpers for testing agents.

Like ``trio.testing``, this is public API: use it to test your own agents.
The pytest fixtures are in ``trio_agents.testing.pytest_plugin`` (loaded by
pytest automatically); the hypothesis strategies in
``trio_agents.testing.strategies`` (needs the ``testing`` extra).  See
docs/testing.md.
"""

from ._agents import JobRecord as JobRecord
from ._agents import WorkerRecord as WorkerRecord
from ._fake import fake_job_context as fake_job_context
from ._participants import SimulatedParticipant as SimulatedParticipant
from ._rooms import Participant as Participant
from ._rooms import Room as Room
from ._script import DeleteRoom as DeleteRoom
from ._script import Drain as Drain
from ._script import Join as Join
from ._script import Leave as Leave
from ._script import Script as Script
from ._script import SendText as SendText
from ._script import SetAttributes as SetAttributes
from ._script import SetMetadata as SetMetadata
from ._script import SetName as SetName
from ._script import Terminate as Terminate
from ._script import Wait as Wait
from ._script import play_script as play_script
from ._script import run_script as run_script
from ._script import simulate_script as simulate_script
from ._server import DEV_API_KEY as DEV_API_KEY
from ._server import DEV_API_SECRET as DEV_API_SECRET
from ._server import LocalServer as LocalServer
from ._server import open_local_server as open_local_server
from ._simroom import SimulatedRoom as SimulatedRoom
from ._simulate import LifecycleEvent as LifecycleEvent
from ._simulate import Simulation as Simulation
from ._simulate import SimulationResult as SimulationResult
from ._simulate import simulate_job as simulate_job
from ._timeline import Timeline as Timeline
from ._timeline import render_timeline as render_timeline
from ._timeline import timeline_svg as timeline_svg

__all__ = [
    "DEV_API_KEY",
    "DEV_API_SECRET",
    "DeleteRoom",
    "Drain",
    "JobRecord",
    "Join",
    "Leave",
    "LifecycleEvent",
    "LocalServer",
    "Participant",
    "Room",
    "Script",
    "SendText",
    "SetAttributes",
    "SetMetadata",
    "SetName",
    "SimulatedParticipant",
    "SimulatedRoom",
    "Simulation",
    "SimulationResult",
    "Terminate",
    "Timeline",
    "Wait",
    "WorkerRecord",
    "fake_job_context",
    "open_local_server",
    "play_script",
    "render_timeline",
    "run_script",
    "simulate_job",
    "simulate_script",
    "timeline_svg",
]
