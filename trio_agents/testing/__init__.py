"""The stand-in LiveKit server and helpers for testing agents.

Like ``trio.testing``, this is public API: use it to test your own agents.
"""

from ._agents import JobRecord as JobRecord
from ._agents import WorkerRecord as WorkerRecord
from ._participants import SimulatedParticipant as SimulatedParticipant
from ._rooms import Participant as Participant
from ._rooms import Room as Room
from ._server import DEV_API_KEY as DEV_API_KEY
from ._server import DEV_API_SECRET as DEV_API_SECRET
from ._server import LocalServer as LocalServer
from ._server import open_local_server as open_local_server
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
    "JobRecord",
    "LifecycleEvent",
    "LocalServer",
    "Participant",
    "Room",
    "SimulatedParticipant",
    "Simulation",
    "SimulationResult",
    "Timeline",
    "WorkerRecord",
    "open_local_server",
    "render_timeline",
    "simulate_job",
    "timeline_svg",
]
