"""Run an agent file's ``server`` as a worker that reports zero load.

    python run_agent.py AGENT_FILE dev [options]

The real server offers a job only to workers whose reported load is under its
target (0.7); on the shared 2-core test machine the CPU load often is not, and
the dispatch would then find no worker.  The agent module is imported by its
own name (its directory is on ``PYTHONPATH``), so job processes import it the
same way.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from trio_agents import run_app


def no_load() -> float:
    return 0.0


if __name__ == "__main__":
    agent_file = Path(sys.argv[1])
    sys.path.insert(0, str(agent_file.parent))
    module = importlib.import_module(agent_file.stem)
    module.server.load_fnc = no_load
    run_app(module.server, sys.argv[2:])
